"""A run folder's safety: one owner at a time (an exclusive lock for the run's life), records
written atomically (temp file + rename, so a crash leaves the old file or the new one), stale
temp files of an interrupted write removed, and the rules for starting where a run exists
(refuse unless resuming or overwriting; resume only the same configuration)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here; runs are not protected against races
    fcntl = None

#: configuration keys a resumed run may change: they do not change what the run computes
#: (more epochs extend it; where it runs, how it reports and how the C library hands out memory
#: do not alter its numbers)
RESUME_MAY_CHANGE = frozenset(
    {"name", "out_dir", "epochs", "progress", "device", "num_workers", "checkpoint_every"}
    | {"cpu_malloc"}
)
RECORDS = ("config.yaml", "metrics.json", "history.csv", "curves.html")


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked; the message says why and what to do."""


class RunInUseError(RunFolderError):
    """Another process holds the run folder's lock (`wait_for_run` waits for it)."""


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to a temp file beside `path`, then rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temps(run_dir: Path) -> list[Path]:
    """Delete the temp files (`.<name>.*.tmp`) that interrupted writes left in the run folder
    and its checkpoints/ (only the folder's owner calls this, so none is being written)."""
    stale = [*run_dir.glob(".*.tmp"), *(run_dir / "checkpoints").glob(".*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def make_run_dir(run_dir: Path) -> None:
    """Create the run folder, with an error that names it and the cause."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):  # writable?
            pass
    except (FileExistsError, NotADirectoryError) as e:
        blocker = next((p for p in (run_dir, *run_dir.parents) if p.is_file()), e.filename)
        raise RunFolderError(
            f"cannot use {run_dir} as the run folder: {blocker} is a file, not a folder; "
            "choose another out_dir or name"
        ) from e
    except PermissionError as e:
        raise RunFolderError(
            f"cannot write in {run_dir}: permission denied ({e.filename}); choose a writable "
            "out_dir"
        ) from e


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on `<run_dir>/.lock` (released when the process ends, even on a
    crash). A second process asking for it gets a RunFolderError at once."""
    if fcntl is None:
        yield
        return
    with open(run_dir / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "?"
            raise RunInUseError(
                f"{run_dir} is in use by another process (pid {owner}): two runs cannot share "
                "a run folder; wait for it, or give this run another name"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def wait_for_run(run_dir: Path) -> None:
    """Block until no process holds the run folder's lock (the owner finished, failed or was
    killed: the operating system releases the lock with the process)."""
    if fcntl is None or not (run_dir / ".lock").is_file():
        return
    with open(run_dir / ".lock") as f:
        fcntl.flock(f, fcntl.LOCK_SH)  # granted once the owner's exclusive lock is gone
        fcntl.flock(f, fcntl.LOCK_UN)


def existing_run(run_dir: Path) -> str | None:
    """What the folder already holds ("a finished run (5 of 5 epochs)", "a partial run ..."),
    or None when it holds no run's records or checkpoint."""
    metrics, last = run_dir / "metrics.json", run_dir / "checkpoints" / "last.pt"
    if not metrics.is_file() and not last.is_file():
        return None
    try:
        record = json.loads(metrics.read_text())
        done, total = int(record["epochs_completed"]), int(record["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return "a run (its metrics.json is missing or damaged)"
    return f"a {'finished' if done >= total else 'partial'} run ({done} of {total} epochs)"


def clear_run(run_dir: Path) -> None:
    """Remove a run's records and checkpoints (for `--overwrite`), keeping the lock file."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    for name in RECORDS:
        (run_dir / name).unlink(missing_ok=True)


def config_changes(stored: dict, current: dict) -> dict[str, tuple]:
    """{key: (stored, current)} for every key that determines the result and differs."""
    keys = (set(stored) | set(current)) - RESUME_MAY_CHANGE
    return {
        k: (stored.get(k), current.get(k)) for k in sorted(keys) if stored.get(k) != current.get(k)
    }
