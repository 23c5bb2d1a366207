"""Figures that render everywhere (dfpt_core/workbook/viz.py): every figure a notebook shows is
plotly's interactive mimetype plus a static PNG drawn by kaleido in the system Chromium; without a
browser, the mimetype alone with one warning per process; no renderer and no HTML file fetches
plotly.js from a CDN; the live training dashboard fits JupyterLab's ~1000 px output area with its
legend in view. The tests that draw in a browser skip only where no Chromium is installed."""

from __future__ import annotations

import base64
import json
import re
import struct
import subprocess
import warnings
from pathlib import Path
from types import SimpleNamespace

import nbformat
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from plotly.io.base_renderers import MimetypeRenderer

from dfpt_core.workbook import viz
from dfpt_core.workbook.checkout import BOOK_DIR, REPO_ROOT

PLOTLY_MIME = "application/vnd.plotly.v1+json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CDN = re.compile(r"cdn\.plot\.ly|cdn\.jsdelivr|unpkg\.com|cdnjs", re.IGNORECASE)
#: what a history record of the trainer holds (every key a dashboard panel draws)
KEYS = ("loss", "student_top1", "teacher_top1", "prompt_top1", "student_pt", "teacher_pt")
KEYS += ("prompt_pt", "kd", "tckd", "nckd")


def needs_browser():
    """Skip (with the reason) where no Chrome/Chromium is installed: nothing can draw a PNG."""
    if viz.find_browser() is None:
        pytest.skip(f"no Chrome/Chromium to draw figures in: {viz.INSTALL_CHROMIUM}")


def history(epochs: int) -> list[dict]:
    return [
        {"epoch": e, **{k: 1.0 / e + i for i, k in enumerate(KEYS)}} for e in range(1, epochs + 1)
    ]


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (after checking the signature)."""
    assert data[:8] == PNG_SIGNATURE, data[:16]
    return struct.unpack(">II", data[16:24])


def bundle(renderer: str, fig) -> dict:
    """The mime bundle `renderer` (a `+`-joined plotly renderer string) makes of `fig`: what
    plotly.io.show displays in a notebook."""
    out = {}
    for name in renderer.split("+"):
        part = pio.renderers[name]
        assert isinstance(part, MimetypeRenderer), f"{name} is not a mimetype renderer"
        out.update(part.to_mimebundle(fig.to_dict()))
    return out


@pytest.fixture
def fresh_viz(monkeypatch):
    """viz's per-process state (warnings given, the browser) as in a new process."""
    monkeypatch.setattr(viz, "_warned", set())
    monkeypatch.setattr(viz, "_png_failed", False)
    monkeypatch.setattr(viz, "_browser", None)
    return viz


def test_the_renderer_is_interactive_plus_png_and_no_renderer_uses_a_cdn(fresh_viz, monkeypatch):
    monkeypatch.setattr(viz, "find_browser", lambda: "/usr/bin/chromium")
    monkeypatch.setattr(viz, "static_image", lambda fig: PNG_SIGNATURE + b"drawn")
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a browser is there: no warning
        chosen = viz.renderer()
    assert chosen == viz.RENDERER
    assert chosen.split("+") == ["plotly_mimetype", "book_png"]
    assert viz.os.environ["BROWSER_PATH"] == "/usr/bin/chromium"  # kaleido's own setting
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    shown = bundle(chosen, fig)
    assert set(shown) == {PLOTLY_MIME, "image/png"}
    assert base64.b64decode(shown["image/png"]) == PNG_SIGNATURE + b"drawn"
    for name in {*viz.RENDERER.split("+"), *viz.FALLBACK_RENDERER.split("+")}:
        assert "connected" not in name and "cdn" not in name
        assert not getattr(pio.renderers[name], "connected", False), name
    assert not CDN.search(json.dumps(shown)) and not CDN.search(json.dumps(bundle("json", fig)))


def test_without_a_browser_figures_fall_back_to_the_mimetype_with_one_warning(
    fresh_viz, monkeypatch
):
    monkeypatch.setattr(viz, "find_browser", lambda: None)
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen = [viz.renderer() for _ in range(3)]  # three notebooks' setups in one process
        shown = [bundle(chosen[0], fig) for _ in range(4)]  # four figures
        drawn = [bundle("plotly_mimetype+book_png", fig) for _ in range(2)]  # the PNG asked for
    assert chosen == [viz.FALLBACK_RENDERER] * 3
    assert all(set(b) == {PLOTLY_MIME} for b in shown + drawn)
    assert not any(CDN.search(json.dumps(b)) for b in shown)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    assert "no Chrome/Chromium found" in messages[0] and "apt-get install chromium" in messages[0]


def test_a_browser_that_fails_costs_one_warning_and_no_second_try(fresh_viz, monkeypatch):
    """An executable that is not a browser (it exits at once): the first figure warns, the
    others get no PNG at once, without trying again; the figure itself is still shown."""
    monkeypatch.setattr(viz, "find_browser", lambda: "/bin/false")
    fig = go.Figure(go.Scatter(x=[1], y=[1]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shown = [bundle(viz.RENDERER, fig) for _ in range(3)]
    assert all(set(b) == {PLOTLY_MIME} for b in shown)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "/bin/false could not draw them" in messages[0], messages


def test_a_figure_shown_in_a_notebook_carries_the_mimetype_and_a_png(tmp_path):
    """The notebook path itself: a kernel runs `nb.setup()` (which pins `viz.RENDERER`) and
    `fig.show()`; the output holds the interactive plotly mimetype and a PNG of the figure's own
    size, and nothing on stderr (no warning: the browser is there)."""
    needs_browser()
    from nbclient import NotebookClient

    source = (
        "import plotly.graph_objects as go\nimport dfpt_core.workbook as nb\n"
        "nb.setup(seed=0, live=True)\n"
        "fig = go.Figure(go.Bar(x=['a', 'b', 'c'], y=[3, 1, 2]))\n"
        "fig.update_layout(width=640, height=360, title='one figure')\nfig.show()\n"
        "import plotly.io as pio\nprint(pio.renderers.default)"
    )
    notebook = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    )
    notebook.cells = [nbformat.v4.new_code_cell(source)]
    NotebookClient(notebook, timeout=180, kernel_name="python3", resources={
        "metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    outputs = notebook.cells[0].outputs
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"], outputs
    printed = [o.text.strip() for o in outputs if o.output_type == "stream"]
    assert printed == [viz.RENDERER]  # what nb.setup pinned
    shown = [o for o in outputs if o.output_type == "display_data"]
    assert len(shown) == 1, outputs
    data = shown[0].data
    assert data[PLOTLY_MIME]["layout"]["title"]["text"] == "one figure"
    assert png_size(base64.b64decode(data["image/png"])) == (640, 360)
    assert not CDN.search(json.dumps(data))


def test_static_image_draws_the_figure_at_its_size_in_one_browser(fresh_viz):
    needs_browser()
    fig = viz.curves_figure(history(3))
    first = viz.static_image(fig)
    again = viz.static_image(fig.to_dict())
    assert png_size(first) == (fig.layout.width, fig.layout.height) == png_size(again)
    assert viz._browser is not None  # the first figure started it, the second reused it


@pytest.mark.parametrize("panels", [1, 2, 3, 4])
def test_the_dashboard_fits_1000px_with_its_legend_in_view(panels):
    """Every panel count: two panels a row, at most `MAX_WIDTH` (<= 1000 px) wide, every line in
    a horizontal legend below the panels, and the live FigureWidget laid out the same."""
    chosen = dict(list(viz.PANELS.items())[:panels])
    fig = viz.curves_figure(history(4), chosen, title="resnet20-ce-0123456789: ce")
    rows, cols = viz.grid(panels)
    assert (rows, cols) == ((panels + 1) // 2, min(panels, 2))
    assert fig.layout.width <= 1000 and fig.layout.width == viz.MAX_WIDTH
    assert fig.layout.showlegend is not False
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0
    assert 0 <= fig.layout.legend.x <= 1 and fig.layout.margin.b >= 80
    assert len(fig.data) == sum(len(keys) for keys in chosen.values())
    dashboard = viz.Dashboard(live=True, title="t", panels=chosen, display=False)
    trainer = SimpleNamespace(history=history(1))
    with pytest.MonkeyPatch.context() as m:
        m.delenv("DFPT_HEADLESS", raising=False)
        dashboard = viz.Dashboard(live=True, title="t", panels=chosen, display=False)
        dashboard.on_epoch_end(trainer, trainer.history[-1])
        trainer.history = history(2)
        dashboard.on_epoch_end(trainer, trainer.history[-1])
    assert isinstance(dashboard.widget, go.FigureWidget)
    assert dashboard.widget.layout.width <= 1000 and dashboard.widget.layout.legend.y < 0
    assert [len(t.x) for t in dashboard.widget.data] == [2] * len(fig.data)  # gained a point


@pytest.mark.parametrize("panels", [1, 4])
def test_the_dashboard_legend_is_drawn_inside_the_figure(panels):
    """As plotly.js draws it (an SVG export): the legend box lies inside the figure, below the
    panels, and holds one entry per line."""
    needs_browser()
    chosen = dict(list(viz.PANELS.items())[:panels])
    fig = viz.curves_figure(history(4), chosen, title="a title")
    svg = viz.static_image(fig, format="svg").decode()
    size = re.search(r'<svg class="main-svg"[^>]* width="([\d.]+)" height="([\d.]+)"', svg)
    width, height = (float(v) for v in size.groups())
    assert (width, height) == (fig.layout.width, fig.layout.height)
    legend = svg[svg.index('<g class="legend"') :]
    x, y = (float(v) for v in re.match(r"[^>]*translate\(([\d.]+),\s*([\d.]+)\)", legend).groups())
    box = re.search(r'<rect class="bg"[^>]* width="([\d.]+)" height="([\d.]+)"', legend)
    w, h = (float(v) for v in box.groups())
    assert x >= 0 and y >= 0 and x + w <= width and y + h <= height, (x, y, w, h, width, height)
    assert y > height / 2  # below the panels
    names = re.findall(r'class="legendtext"[^>]*>([^<]+)<', legend)
    assert sorted(names) == sorted(t.name for t in fig.data)


def test_write_html_bundles_plotlyjs_beside_the_page_and_never_a_cdn(tmp_path):
    from plotly.offline import get_plotlyjs

    fig = viz.curves_figure(history(3), title="offline")
    page = viz.write_html(fig, tmp_path / "figs" / "curves.html")
    html = page.read_text()
    assert not CDN.search(html) and "https://" not in re.sub(r"https://plot\.ly[^\"']*", "", html)
    assert '<script charset="utf-8" src="plotly.min.js"></script>' in html
    bundle_file = page.parent / viz.PLOTLYJS
    assert bundle_file.read_text() == get_plotlyjs()
    stamp = bundle_file.stat().st_mtime_ns
    viz.write_html(go.Figure(), page.parent / "other.html")
    assert bundle_file.stat().st_mtime_ns == stamp  # written once per folder


def test_written_html_draws_offline_in_a_browser(tmp_path):
    """The page and its plotly.min.js, opened from disk in headless Chromium (no network):
    plotly.js loads and draws the figure."""
    needs_browser()
    page = viz.write_html(viz.curves_figure(history(3), title="offline"), tmp_path / "c.html")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'u'}",
    ]
    command = [viz.find_browser(), *flags, "--virtual-time-budget=10000", "--dump-dom"]
    dom = subprocess.run(
        [*command, page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert 'class="main-svg"' in dom and "loss (train)" in dom


def test_no_notebook_or_library_file_fetches_plotly_from_a_cdn():
    """The book's code cells and the library never ask for a CDN renderer or CDN plotly.js (its
    HTML goes through `viz.write_html`)."""
    banned = re.compile(r"notebook_connected|iframe_connected|include_plotlyjs\s*=\s*['\"]cdn")
    sources = {p: p.read_text() for p in (REPO_ROOT / "dfpt_core").rglob("*.py")}
    for path in sorted(BOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        sources[path] = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    offenders = [
        str(Path(p).relative_to(REPO_ROOT)) for p, s in sources.items() if banned.search(s)
    ]
    assert not offenders, offenders
