"""Plotly figures and the training dashboard: a live FigureWidget in JupyterLab, a static figure
plus curves.html when headless (papermill, nbval, the command line)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..engine.records import atomic_write_text

RENDERER = "plotly_mimetype+notebook_connected"

# Panels of the training dashboard: title -> history keys drawn in it (missing keys skipped).
PANELS = {
    "loss (train)": ("loss",),
    "top-1 % (test)": ("student_top1", "teacher_top1", "prompt_top1"),
    "true-class confidence p_t": ("student_pt", "teacher_pt", "prompt_pt"),
    "KD = TCKD + (1 - p_t^T) NCKD": ("kd", "tckd", "nckd"),
}


def is_live(live: bool) -> bool:
    """True when plots and progress bars may be interactive: the notebook's `live` parameter,
    overridden by DFPT_HEADLESS=1 (set by `make test`/`dfpt book`)."""
    return bool(live) and os.environ.get("DFPT_HEADLESS", "") in ("", "0")


def curves_figure(
    history: Sequence[dict], panels: dict = PANELS, title: str = "", figure_cls=go.Figure
) -> go.Figure:
    """One subplot per panel, one line per history key, x = epoch."""
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels), figure=figure_cls())
    epochs = [h["epoch"] for h in history]
    for col, keys in enumerate(panels.values(), start=1):
        for key in keys:
            if history and key in history[0]:
                fig.add_trace(
                    go.Scatter(
                        x=epochs,
                        y=[h.get(key) for h in history],
                        mode="lines+markers",
                        name=key,
                        legendgroup=key,
                    ),
                    row=1,
                    col=col,
                )
    fig.update_layout(
        title=title,
        height=340,
        width=max(600, 330 * len(panels)),
        margin=dict(t=60, l=40, r=20, b=40),
    )
    fig.update_xaxes(title_text="epoch")
    return fig


class Dashboard:
    """Training callback. Live: a FigureWidget redrawn inside `batch_update()` after every
    epoch. Headless: nothing until the end, then one static figure (and `curves.html`)."""

    def __init__(self, live: bool, title: str = "", panels: dict = PANELS, display=True):
        self.live, self.title, self.panels, self.display = is_live(live), title, panels, display
        self.widget = None

    def on_epoch_end(self, trainer, record: dict) -> None:
        if not self.live:
            return
        history = trainer.history
        if self.widget is None:
            from IPython.display import display

            self.widget = curves_figure(history, self.panels, self.title, go.FigureWidget)
            if self.display:
                display(self.widget)
            return
        fresh = curves_figure(history, self.panels, self.title)
        with self.widget.batch_update():
            for trace, new in zip(self.widget.data, fresh.data, strict=False):
                trace.x, trace.y = new.x, new.y

    def on_train_end(self, trainer) -> None:
        fig = curves_figure(trainer.history, self.panels, self.title)
        if trainer.run_dir is not None and trainer.is_main:
            write_html(fig, Path(trainer.run_dir) / "curves.html")
        if not self.live and self.display:
            fig.show()


def write_html(fig: go.Figure, path: str | os.PathLike) -> Path:
    """Standalone HTML (plotly.js from the CDN keeps files small; open it in any browser)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, fig.to_html(include_plotlyjs="cdn"))
