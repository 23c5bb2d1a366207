"""Plotly figures and the training dashboard: a live FigureWidget in JupyterLab, a static figure
plus curves.html when headless (papermill, nbval, the command line).

Every figure a notebook shows carries two representations (`renderer`, which `nb.setup` calls):
plotly's mimetype, which JupyterLab draws interactively with the plotly extension it bundles,
and a static PNG, which GitHub, nbviewer and nbconvert's HTML show. kaleido (>= 1) draws the
PNG in a system Chromium (Debian's `chromium`; $BROWSER_PATH names another), one browser per
process started at the first figure. No renderer and no HTML file fetches plotly.js from a CDN.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import shutil
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer
from plotly.subplots import make_subplots

from ..engine.records import atomic_write_text

#: Debian's Chromium (`apt-get install chromium`, done by `make install` as root): kaleido
#: draws the static PNGs in it, the browser test drives JupyterLab in it.
CHROMIUM = "/usr/bin/chromium"
INSTALL_CHROMIUM = (
    "install Debian's Chromium (as root: `apt-get install chromium`, which `make install` runs) "
    "or point $BROWSER_PATH at a Chrome/Chromium"
)
#: interactive in JupyterLab (plotly's mimetype) + a static PNG (kaleido, `StaticPng`)
RENDERER = "plotly_mimetype+book_png"
#: without a browser (or kaleido): the interactive mimetype only, blank outside JupyterLab
FALLBACK_RENDERER = "plotly_mimetype"
#: width of the live figures: JupyterLab's notebook output area is about 1000 px (968 px in a
#: 1400 px window with the file browser open, tests/test_live_book.py)
MAX_WIDTH = 960

# Panels of the training dashboard: title -> history keys drawn in it (missing keys skipped).
PANELS = {
    "loss (train)": ("loss",),
    "top-1 % (test)": ("student_top1", "teacher_top1", "prompt_top1"),
    "true-class confidence p_t": ("student_pt", "teacher_pt", "prompt_pt"),
    "KD = TCKD + (1 - p_t^T) NCKD": ("kd", "tckd", "nckd"),
}

_warned: set[str] = set()  # what this process has already warned about (once each)
_png_failed = False  # the browser failed once: no further attempts in this process


def warn_once(key: str, message: str) -> None:
    """One warning per process for `key`, however many figures run into it."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def find_browser() -> str | None:
    """The Chrome/Chromium kaleido drives: $BROWSER_PATH (kaleido's own setting) when it names
    an executable, else Debian's /usr/bin/chromium, else one on PATH; None when there is none."""
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
    for path in (os.environ.get("BROWSER_PATH"), CHROMIUM, *map(shutil.which, names)):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def kaleido_ready() -> bool:
    """kaleido >= 1 importable (the [book] extra)."""
    try:
        from importlib.metadata import version

        import kaleido  # noqa: F401
    except ImportError:
        return False
    return int(version("kaleido").split(".")[0]) >= 1


def renderer() -> str:
    """The plotly renderer for this process (`nb.setup` sets it as the default): `RENDERER`
    (interactive mimetype + static PNG) when a browser and kaleido are there, and $BROWSER_PATH
    pointed at that browser; else `FALLBACK_RENDERER`, with one warning per process that says
    how to get the PNGs."""
    browser = find_browser()
    if browser is None or not kaleido_ready():
        missing = "no Chrome/Chromium found" if browser is None else "kaleido>=1 is not installed"
        how = INSTALL_CHROMIUM if browser is None else "pip install 'kaleido>=1' (`make install`)"
        warn_once(
            "renderer",
            f"plotly figures carry no static PNG ({missing}): they show in JupyterLab but are "
            f"blank on GitHub, nbviewer and in HTML exports; {how}",
        )
        return FALLBACK_RENDERER
    os.environ["BROWSER_PATH"] = browser  # kaleido's setting, for any image export here
    return RENDERER


def figure_size(fig_dict: dict) -> tuple[int, int]:
    """Width and height in px the figure asks for (its layout, its template's, else plotly's
    image defaults), as plotly.io.to_image reads them."""
    layout = fig_dict.get("layout", {})
    template = layout.get("template", {}).get("layout", {})
    width = layout.get("width") or template.get("width") or pio.defaults.default_width
    height = layout.get("height") or template.get("height") or pio.defaults.default_height
    return int(width), int(height)


class KaleidoBrowser:
    """One kaleido (one headless browser) for the whole process, on an event loop of its own
    thread, so a notebook's kernel (which runs its own loop) can call it; every call has a
    time limit, so a browser that hangs cannot hang the notebook. Closed at exit."""

    START_S, RENDER_S = 60, 60

    def __init__(self, path: str):
        import atexit

        import kaleido

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kaleido", daemon=True)
        self.thread.start()

        async def start():  # built on its own loop: kaleido's queues belong to it
            k = kaleido.Kaleido(n=1, mathjax=False, path=path)
            await k.open()
            return k

        try:
            self.kaleido = self.call(start(), self.START_S)
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.loop.is_running():
                self.loop.close()
            raise
        atexit.register(self.close)

    def call(self, coroutine, timeout: float):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def image(self, fig_dict: dict, opts: dict) -> bytes:
        return self.call(self.kaleido.calc_fig(fig_dict, opts=opts), self.RENDER_S)

    def close(self) -> None:
        if self.loop.is_running():
            with contextlib.suppress(Exception):  # at exit: nothing left to report to
                self.call(self.kaleido.close(), 30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        if not self.loop.is_running():
            self.loop.close()


_browser: KaleidoBrowser | None = None


def static_image(fig, format: str = "png", scale: float = 1) -> bytes | None:
    """`fig` drawn by kaleido in the system browser (`find_browser`), or None when there is no
    browser or it failed (one warning per process, and no further attempt). One browser serves
    every figure of the process (`KaleidoBrowser`, started at the first figure); MathJax off,
    plotly.js from the installed plotly package: nothing is fetched from the network."""
    global _browser, _png_failed
    browser = find_browser()
    if _png_failed or browser is None or not kaleido_ready():
        return None
    fig_dict = fig if isinstance(fig, dict) else fig.to_dict()
    width, height = figure_size(fig_dict)
    try:
        if _browser is None:
            _browser = KaleidoBrowser(browser)
        return _browser.image(
            fig_dict, dict(format=format, width=width, height=height, scale=scale)
        )
    except Exception as e:  # a browser that cannot start or render: figures stay interactive
        _png_failed = True
        warn_once(
            "png",
            f"plotly figures carry no static PNG: {browser} could not draw them "
            f"({type(e).__name__}: {e.args[0] if e.args else e}); {INSTALL_CHROMIUM}",
        )
        return None


class StaticPng(MimetypeRenderer):
    """plotly renderer `book_png`: the figure as an `image/png` output (`static_image`), or
    nothing when it cannot be drawn. Combined with `plotly_mimetype` in `RENDERER`."""

    def to_mimebundle(self, fig_dict):
        png = static_image(fig_dict)
        return {"image/png": base64.b64encode(png).decode("ascii")} if png else {}


pio.renderers["book_png"] = StaticPng()


def is_live(live: bool) -> bool:
    """True when plots and progress bars may be interactive: the notebook's `live` parameter,
    overridden by DFPT_HEADLESS=1 (set by `make test`/`dfpt book`)."""
    return bool(live) and os.environ.get("DFPT_HEADLESS", "") in ("", "0")


def grid(panels: int) -> tuple[int, int]:
    """Rows and columns of the dashboard: two panels a row, so each stays readable within
    `MAX_WIDTH`."""
    cols = min(panels, 2)
    return math.ceil(panels / cols), cols


def curves_figure(
    history: Sequence[dict], panels: dict = PANELS, title: str = "", figure_cls=go.Figure
) -> go.Figure:
    """One subplot per panel (two a row), one line per history key, x = epoch; `MAX_WIDTH`
    wide with the legend in rows below the panels, so it fits JupyterLab's output area."""
    rows, cols = grid(len(panels))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=list(panels),
        figure=figure_cls(),
        horizontal_spacing=0.09,
        vertical_spacing=0.17 if rows > 1 else 0.1,
    )
    epochs = [h["epoch"] for h in history]
    for index, keys in enumerate(panels.values()):
        row, col = divmod(index, cols)
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
                    row=row + 1,
                    col=col + 1,
                )
    top = 70 if title else 40
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left"),
        width=MAX_WIDTH,
        height=top + 230 * rows + 100,
        margin=dict(t=top, l=50, r=20, b=100),
        showlegend=True,
        legend=dict(orientation="h", x=0, xanchor="left", y=-0.1, yanchor="top"),
    )
    fig.update_xaxes(title_text="epoch", title_standoff=4)
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


#: plotly.js beside the HTML files that `write_html` writes (one copy per folder)
PLOTLYJS = "plotly.min.js"


def write_html(fig: go.Figure, path: str | os.PathLike) -> Path:
    """The figure as an HTML page that works offline: it loads the plotly.js bundled with the
    plotly package from `plotly.min.js` in the same folder (written once per folder, and again
    when plotly's version changes), never from a CDN. Keep the two files together."""
    from plotly.offline import get_plotlyjs

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bundle, script = path.parent / PLOTLYJS, get_plotlyjs()
    if not bundle.is_file() or bundle.stat().st_size != len(script.encode()):
        atomic_write_text(bundle, script)
    return atomic_write_text(path, fig.to_html(include_plotlyjs="directory"))
