"""What every notebook of the book calls first: one-line setup, parameter checks, the training
settings a notebook's runs share, and the metrics.json each notebook leaves in its out_dir."""

from __future__ import annotations

import json
import os
from pathlib import Path

import plotly.io as pio
import torch

from ..engine.runtime import seed_everything
from ..run.recipes import recipe
from .viz import is_live, renderer


def setup(seed: int = 0, live: bool = True, threads: int | None = None) -> bool:
    """Seed everything, ask for deterministic kernels, pin the plotly renderer (so HTML exports
    keep the plots) and quiet warnings that would flood headless logs. Returns whether the
    notebook runs live (interactive widgets and progress bars) or headless."""
    seed_everything(seed)
    pio.renderers.default = renderer()
    if threads:
        torch.set_num_threads(threads)
    live = is_live(live)
    os.environ.setdefault("TQDM_MININTERVAL", "1" if live else "30")
    import warnings

    warnings.filterwarnings("ignore", message=".*deterministic.*")
    return live


def check_choice(name: str, value, allowed) -> None:
    """A notebook parameter must be one of `allowed`; the error names both."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"parameter {name}={value!r} is not allowed; choose one of {allowed}")


def check_positive(name: str, value) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"parameter {name}={value!r} must be a positive number")


def write_metrics(out_dir: str | os.PathLike, metrics: dict, **extra) -> Path:
    """The notebook's results record: `<out_dir>/metrics.json`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    path.write_text(json.dumps({**extra, **metrics}, indent=2, default=str))
    return path


#: The recipe (`dfpt_core.run.recipes`) whose schedule and memory format every notebook run
#: uses, at every scale: the book's runs are short, so each one follows a cosine schedule over
#: its own epochs (also at `full` scale, where `dfpt train` uses the `full` recipe's
#: multi-step schedule).
BOOK_RECIPE = "cpu"
BOOK_RECIPE_KEYS = ("schedule", "milestones", "channels_last")


def common_args(
    dataset: str,
    in_chans: int,
    limit_train,
    limit_test,
    batch_size: int,
    lr: float,
    device: str,
    seed: int,
    live: bool,
    amp: str = "none",
    val_size: int = 0,
    **extra,
) -> dict:
    """The training settings every run of a notebook shares (so runs hash, and cache, alike
    across notebooks): the notebook's data, batch, lr, device and seed, and at every scale the
    schedule and memory format of the book's recipe (`BOOK_RECIPE`: a cosine schedule over each
    run's epochs, channels_last); `amp` and `val_size` are the scale's precision ("auto" at
    cpu scale: bf16 where the CPU computes it natively) and validation split (the held-out
    training images that choose each run's epoch)."""
    book = recipe(BOOK_RECIPE)
    return dict(
        dataset=dataset,
        in_chans=in_chans,
        limit_train=limit_train,
        limit_test=limit_test,
        batch_size=batch_size,
        lr=lr,
        device=device,
        seed=seed,
        amp=amp,
        val_size=val_size,
        **{key: book[key] for key in BOOK_RECIPE_KEYS},
        progress=is_live(live),
        **extra,
    )


def preset_common(params: dict) -> dict:
    """`common_args` from a scale's preset (as `book.load_params` returns it: the scale's recipe
    and book/params/<scale>.yaml): what a notebook run at that scale shares, for scripts that
    train as the book does."""
    keys = ("dataset", "in_chans", "limit_train", "limit_test", "batch_size", "lr", "device")
    extra = {k: params[k] for k in ("amp", "val_size")}
    return common_args(*(params[k] for k in keys), params["seed"], live=False, **extra)
