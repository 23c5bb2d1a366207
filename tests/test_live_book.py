"""The live book in a real browser: JupyterLab driven in Debian's Chromium by Playwright.

A temporary copy of notebooks 02 and 06, its `parameters` set to the smoke preset and
`live = True`, its outputs cleared, is served by `jupyter lab` (its own port, token, settings and
runs folder: nothing is written into the checkout) with DFPT_HEADLESS unset, so the notebooks run
as a reader runs them. Each notebook is run with Run > Run All Cells, and the tests check what a
reader sees: the training dashboards gain points while they train, the temperature slider of 02
and the ablation panel of 06 answer, every figure and widget renders (interactive, each plotly
output also carrying its static PNG), and the page logs no console error.

Needs /usr/bin/chromium (`make install` installs it as root) and the `playwright` package (the
dev extra; never `playwright install`: Chromium is Debian's). Without them the tests skip with the
reason, and fail under CI (CI=true). `make test-browser` runs them (part of `make test`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import papermill as pm
import pytest
from papermill.parameterize import parameterize_notebook

from dfpt_core.workbook.book import load_params
from dfpt_core.workbook.checkout import BOOK_DIR

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOKS = ("02_dkd_decomposition", "06_ablations")
SERVER_START_S = 90  # jupyter lab up and answering
RUN_ALL_S = 300  # one notebook, cold cache, at smoke scale, on a shared 2-core machine
ANSWER_S = 120  # a widget's round trip to the kernel and back (06 may load or train a run)
#: the browser window: JupyterLab's notebook output area is then about 1000 px wide, the width
#: the book's live figures are sized for (NOTEBOOKS.md)
VIEWPORT = {"width": 1400, "height": 1000}
#: Chromium flags for this machine's closed network (no background connections to refuse)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Console errors the page may log that say nothing about the book: (substring, why benign).
#: Every other console error or uncaught page error fails `test_the_page_logs_no_console_error`.
BENIGN_CONSOLE = ()


def missing_browser() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return (
            f"{CHROMIUM} not found: install Debian's Chromium (as root: apt-get install "
            "chromium, which `make install` runs)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e '.[dev]' (`make install`)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live_copy(name: str, folder: Path, runs: Path) -> Path:
    """`book/<name>.ipynb` copied into `folder` with the smoke preset and `live = True` injected
    after its parameters cell (papermill's own injection, without executing) and its outputs
    cleared, so everything the page shows comes from this run."""
    source = BOOK_DIR / f"{name}.ipynb"
    declared = pm.inspect_notebook(str(source))
    given = {
        **load_params("smoke"),
        "scale": "smoke",
        "live": True,
        "out_dir": str(runs / "book-live" / name),
        "cache_dir": str(runs / "book-live" / "cache"),
    }
    notebook = nbformat.read(source, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook = parameterize_notebook(
        notebook, {k: v for k, v in given.items() if k in declared}, kernel_name="python3"
    )
    notebook.metadata.pop("papermill", None)
    target = folder / source.name
    nbformat.write(notebook, target)
    return target


def lab_settings(folder: Path) -> Path:
    """JupyterLab user settings for the test: every cell attached to the page (the default
    windowing attaches only the cells in view, so off-screen outputs would not be in the DOM) and
    no news fetched from the internet."""
    settings = {
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }
    for plugin, values in settings.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return folder


# JavaScript run in the page. A recorder, installed before a notebook runs, keeps for every
# training dashboard (a plotly figure with a "loss (train)" panel) the point counts it showed,
# in order, every 100 ms: what a reader watching the figure saw.
RECORDER = """() => {
  if (window.__dashboards) return;
  window.__dashboards = {};
  setInterval(() => {
    for (const gd of document.querySelectorAll('.js-plotly-plot')) {
      const notes = (gd.layout && gd.layout.annotations) || [];
      if (!notes.some(a => a.text === 'loss (train)') || !gd.data || !gd.data.length) continue;
      const title = (gd.layout.title && (gd.layout.title.text || gd.layout.title)) || '?';
      // one record per figure on the page, named by its order of appearance and title
      gd.__dashboard = gd.__dashboard
        || `${Object.keys(window.__dashboards).length + 1}: ${title}`;
      const seen = (window.__dashboards[gd.__dashboard] ||= []);
      const full = gd._fullData && gd._fullData[0];  // as drawn (typed arrays decoded)
      const n = full && full._length != null ? full._length : (gd.data[0].x || []).length;
      if (seen[seen.length - 1] !== n) seen.push(n);
    }
  }, 100);
}"""

# JupyterLab has started and opened the notebook.
APP_READY = """() => {
  const app = window.jupyterapp;
  return !!(app && app.shell.currentWidget && app.shell.currentWidget.sessionContext);
}"""

# Run > Run All Cells on the notebook in view, once its kernel is ready.
RUN_ALL = """async () => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  await panel.context.ready;
  await panel.sessionContext.ready;
  app.commands.execute('notebook:run-all-cells');  // not awaited: it resolves at the end
}"""

# Done when every code cell has an execution count, or when one failed (Run All stops there).
FINISHED = """(panel) => {
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
  const errors = panel.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]');
  const failed = [...errors].some(o => o.textContent.includes('Traceback'));
  const idle = !prompts.some(p => p.textContent.includes('*'));
  return (prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent)))
         || (failed && idle);
}"""

# What the page shows of every visible output of the notebook panel: the figures plotly's
# JupyterLab extension renders from the plotly mimetype (`static`: it shows the bundle's PNG until
# the pointer enters, then the interactive graph), the plotly graphs on the page (FigureWidgets
# and the static figures made interactive), the widget outputs, and errors.
OUTPUTS = """(panel) => {
  const rect = el => { const r = el.getBoundingClientRect();
                       return {left: r.left, top: r.top, right: r.right, bottom: r.bottom,
                               width: r.width, height: r.height}; };
  const visible = [...panel.querySelectorAll('.jp-OutputArea-output')]
    .filter(o => !o.closest('.lm-mod-hidden'));
  const title = gd => { const t = gd.layout && gd.layout.title;
                        return (t && (t.text || (typeof t === 'string' ? t : ''))) || ''; };
  return {
    text: panel.innerText,
    empty: visible.filter(o => rect(o).height === 0).map(o => o.className),
    static: [...panel.querySelectorAll('.jp-RenderedPlotly')].map(r => {
      const img = r.querySelector('img.plot-img');
      return {png: !!img && img.src.startsWith('data:image/png') && img.naturalWidth > 0,
              graph: !!r.querySelector('.plot-container .main-svg')};
    }),
    plots: [...panel.querySelectorAll('.js-plotly-plot')].map(gd => {
      const svg = gd.querySelector('svg.main-svg');
      const legend = gd.querySelector('g.legend');
      const output = gd.closest('.jp-OutputArea-output');
      return {
        title: title(gd),
        traces: gd.data ? gd.data.length : -1,
        points: (gd._fullData || []).reduce(  // as plotly.js decoded them (typed arrays)
          (n, t) => n + (t._length != null ? t._length : (t.x || t.y || []).length || 0), 0),
        svg: svg ? rect(svg) : null,
        output: output ? rect(output) : null,
        legend: legend ? rect(legend) : null,
        widget: !!gd.closest('.jupyter-widgets'),
        dashboard: ((gd.layout && gd.layout.annotations) || [])
          .some(a => a.text === 'loss (train)'),
      };
    }),
    widgets: visible.filter(o => o.querySelector('.jupyter-widgets')).length,
  };
}"""


class Lab:
    """A jupyter lab server on a temporary copy of the book and a Chromium driven by Playwright;
    `run(name)` opens a notebook in its own page and runs all its cells (once per session)."""

    def __init__(self, root: Path):
        from playwright.sync_api import sync_playwright

        self.root, self.book, self.runs = root, root / "book", root / "runs"
        self.book.mkdir()
        for name in NOTEBOOKS:
            live_copy(name, self.book, self.runs)
        self.port, self.token = free_port(), uuid.uuid4().hex
        self.base = f"http://127.0.0.1:{self.port}"
        # live (no DFPT_HEADLESS), training what is not cached, recording runs nowhere else
        unset = ("DFPT_HEADLESS", "DFPT_REPLAY_ONLY", "DFPT_RUN_LOG")
        env = {k: v for k, v in os.environ.items() if k not in unset}
        env.update(
            OMP_NUM_THREADS="1",
            DFPT_RUNS_DIR=str(self.runs),
            JUPYTER_CONFIG_DIR=str(root / "jupyter-config"),
            JUPYTER_RUNTIME_DIR=str(root / "jupyter-runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(lab_settings(root / "lab-settings")),
            JUPYTERLAB_WORKSPACES_DIR=str(root / "lab-workspaces"),
            IPYTHONDIR=str(root / "ipython"),
            PYDEVD_DISABLE_FILE_VALIDATION="1",
        )
        self.log = (root / "jupyter.log").open("w")
        command = [
            sys.executable, "-m", "jupyterlab", "--no-browser",
            f"--ServerApp.port={self.port}", "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
            "--ServerApp.allow_root=True",  # CI and this machine run as root
            f"--ServerApp.root_dir={self.book}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run its commands
        ]  # fmt: skip
        self.console: list[str] = []  # every console error and uncaught page error
        self.pages: dict = {}
        self.seconds: dict[str, float] = {}
        self.playwright = self.browser = None
        self.server = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.wait_for_server()
            self.playwright = sync_playwright().start()
            self.browser = self.playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
        except BaseException:
            self.close()
            raise

    def wait_for_server(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: {self.server_log()}")
            try:
                url = f"{self.base}/api/status?token={self.token}"
                with urllib.request.urlopen(url, timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)  # polling the server until it answers, not a wait for state
        raise RuntimeError(f"jupyter lab did not answer in {SERVER_START_S} s: {self.server_log()}")

    def server_log(self) -> str:
        self.log.flush()
        return (self.root / "jupyter.log").read_text()[-3000:]

    def listen(self, page, name: str) -> None:
        def on_console(message):
            if message.type == "error":
                self.console.append(f"{name}: console.error: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.console.append(f"{name}: page error: {error}"))

    def run(self, name: str):
        """The page of notebook `name`, all of its cells run (once)."""
        if name in self.pages:
            return self.pages[name]
        context = self.browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        self.listen(page, name)
        page.goto(f"{self.base}/lab/tree/{name}.ipynb?token={self.token}&reset")
        panel = page.locator(".jp-NotebookPanel").first
        page.wait_for_function(APP_READY, timeout=SERVER_START_S * 1000)
        page.evaluate(RECORDER)
        start = time.monotonic()
        page.evaluate(RUN_ALL)
        try:
            page.wait_for_function(
                FINISHED, arg=panel.element_handle(), timeout=RUN_ALL_S * 1000, polling=500
            )
        except Exception as e:
            raise AssertionError(f"{name} did not finish: {self.state(page, name)}") from e
        self.seconds[name] = time.monotonic() - start
        tracebacks = page.evaluate(
            "(panel) => [...panel.querySelectorAll('.jp-OutputArea-output')]"
            ".map(o => o.textContent).filter(t => t.includes('Traceback'))",
            panel.element_handle(),
        )
        assert not tracebacks, f"{name} failed:\n" + "\n".join(tracebacks)
        self.pages[name] = page
        return page

    def state(self, page, name: str) -> str:
        """Where a notebook stands (for failure messages): its prompts, the end of its text,
        the server's log; a screenshot beside the temporary book."""
        shot = self.root / f"{name}.png"
        page.screenshot(path=str(shot), full_page=True)
        prompts = page.evaluate(
            "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]"
            ".map(p => p.textContent).join(' ')"
        )
        text = page.locator(".jp-NotebookPanel").first.inner_text()[-2000:]
        return (
            f"prompts {prompts}\n--- page text (end) ---\n{text}\n--- console ---\n"
            f"{self.console}\n--- server log ---\n{self.server_log()}\nscreenshot: {shot}"
        )

    def close(self) -> None:
        for closing in (
            self.browser and self.browser.close,
            self.playwright and self.playwright.stop,
        ):
            with contextlib.suppress(Exception):  # tearing down: the server must stop anyway
                if closing:
                    closing()
        self.server.terminate()
        try:
            self.server.wait(30)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, fmnist_root, request):
    """The server and browser, shared by the module's tests (each notebook runs once)."""
    reason = missing_browser()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
    session = Lab(tmp_path_factory.mktemp("live-book"))
    yield session
    times = ", ".join(f"{k} {v:.0f} s" for k, v in session.seconds.items())
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # shown, not captured
            reporter.write_line(f"\nlive book, Run All Cells: {times}")
    session.close()


def panel_of(page):
    return page.locator(".jp-NotebookPanel").first.element_handle()


def outputs(page) -> dict:
    return page.evaluate(OUTPUTS, panel_of(page))


def plot(page, title: str):
    """The plotly graph div whose title starts with `title` (an element handle)."""
    handle = page.evaluate_handle(
        """(title) => [...document.querySelectorAll('.js-plotly-plot')].find(gd =>
             ((gd.layout.title && (gd.layout.title.text || gd.layout.title)) || '')
               .toString().startsWith(title))""",
        title,
    ).as_element()
    assert handle is not None, f"no figure titled {title!r} on the page"
    return handle


def test_dashboards_gain_points_while_training(lab):
    """(a) Each live training dashboard appears after its first epoch and gains a point per
    epoch while the cell runs (the counts a 100 ms recorder saw), and fits JupyterLab's output
    area with its legend in view."""
    for name in NOTEBOOKS:
        page = lab.run(name)
        seen = page.evaluate("() => window.__dashboards")
        assert seen, f"{name}: no training dashboard was shown"
        for title, counts in seen.items():
            assert counts[0] == 1 and counts == list(range(1, len(counts) + 1)), (title, counts)
            assert len(counts) >= 2, f"{name}: dashboard {title!r} never gained a point: {counts}"
        dashboards = [p for p in outputs(page)["plots"] if p["dashboard"]]
        assert len(dashboards) == len(seen)
        for d in dashboards:
            figure, area, legend = d["svg"], d["output"], d["legend"]
            assert figure["width"] <= area["width"] <= 1040, (d["title"], figure, area)
            assert legend is not None, f"{d['title']}: no legend"
            assert area["left"] <= legend["left"] and legend["right"] <= area["right"], d
            assert figure["top"] <= legend["top"] and legend["bottom"] <= figure["bottom"], d


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_figure_and_widget_renders(lab, name):
    """(d) After Run All: no error output, no "Error displaying widget", no empty output; every
    plotly figure JupyterLab shows from the mimetype carries its static PNG (shown first) and
    turns into a drawn interactive graph, with its data, when the pointer enters it; every plotly
    graph on the page (the FigureWidgets included) is drawn at a non-zero size."""
    page = lab.run(name)
    shown = outputs(page)
    assert "Error displaying widget" not in shown["text"]
    assert "Error rendering" not in shown["text"]
    assert not shown["empty"], f"{name}: outputs that render as nothing: {shown['empty']}"
    assert shown["widgets"] >= 1, f"{name}: no widget output (is it running live?)"
    assert shown["static"], f"{name}: no plotly figure"
    assert all(s["png"] for s in shown["static"]), f"{name}: a figure without its PNG"
    figures = page.locator(".jp-RenderedPlotly")
    for i in range(figures.count()):
        image = figures.nth(i).locator("img.plot-img")
        if image.is_visible():  # not yet entered
            page.mouse.move(1, 1)  # off the notebook while it scrolls
            image.scroll_into_view_if_needed()
            box = image.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        figures.nth(i).locator(".plot-container .main-svg").first.wait_for(timeout=ANSWER_S * 1000)
    shown = outputs(page)
    assert all(s["graph"] for s in shown["static"])
    for p in shown["plots"]:
        assert p["traces"] >= 0 and p["svg"] is not None, p
        assert p["svg"]["width"] > 0 and p["svg"]["height"] > 0, p
    # the figures shown from the mimetype, and the dashboards, draw their data; a widget figure
    # may wait empty for its controls (06's ablation panel)
    drawn = [p for p in shown["plots"] if not p["widget"] or p["dashboard"]]
    assert len(drawn) >= len(shown["static"])
    assert all(p["points"] > 0 for p in drawn), [(p["title"], p["points"]) for p in drawn]


def test_temperature_slider_redraws_its_figure(lab):
    """(b) Notebook 02: typing T = 6 into the temperature slider's readout sends it to the
    kernel, whose observer redraws the FigureWidget below the slider: its bars move to
    "T = 6" with new heights."""
    page = lab.run("02_dkd_decomposition")
    box = page.locator(".widget-vbox", has=page.locator(".widget-hslider"))
    figure = box.locator(".js-plotly-plot").element_handle()
    before = figure.evaluate("gd => gd.data.map(t => [t.x[0], t.y[0]])")
    assert before[0][0] == "T = 4", before
    readout = box.locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("6")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "gd => gd.data.every(t => t.x[0] === 'T = 6')", arg=figure, timeout=ANSWER_S * 1000
    )
    after = figure.evaluate("gd => gd.data.map(t => [t.x[0], t.y[0]])")
    assert [y for _, y in after] != [y for _, y in before], (before, after)
    assert readout.inner_text().startswith("6"), readout.inner_text()


def test_ablation_panel_loads_a_variant_into_its_figures(lab):
    """(c) Notebook 06: choosing fusion = residual and pressing "train / load" loads (or
    trains) that DFPT-KD variant: the bar chart gains its student and prompt-path bars and the
    curve chart its per-epoch prompt-path curve."""
    page = lab.run("06_ablations")
    box = page.locator(".widget-vbox", has=page.locator("button", has_text="train / load"))
    fusion = box.locator(".widget-dropdown", has=page.locator("label", has_text="fusion"))
    fusion.locator("select").select_option(label="residual")
    bars = plot(page, "student and prompt-path top-1")
    curves = plot(page, "prompt-path top-1 per epoch")
    assert bars.evaluate("gd => gd.data.map(t => (t.x || []).length)") == [0, 0]
    assert curves.evaluate("gd => gd.data.length") == 0
    box.locator("button", has_text="train / load").click()
    variant = "fusion=residual (2 ep)"
    page.wait_for_function(
        "([gd, name]) => gd.data.every(t => (t.x || []).includes(name))",
        arg=[bars, variant],
        timeout=ANSWER_S * 1000,
    )
    page.wait_for_function("gd => gd.data.length === 1", arg=curves, timeout=ANSWER_S * 1000)
    top1 = bars.evaluate("gd => gd.data.map(t => t.y[0])")
    assert all(0 <= y <= 100 for y in top1), top1
    curve = curves.evaluate("gd => [gd.data[0].name, gd.data[0].x.length]")
    assert curve == [variant, 2], curve


def test_the_page_logs_no_console_error(lab):
    """(e) Across both notebooks' pages (runs and interactions before this test), no
    console.error and no uncaught page error, except the documented `BENIGN_CONSOLE`."""
    for name in NOTEBOOKS:
        lab.run(name)
    errors = [e for e in lab.console if not any(text in e for text, _ in BENIGN_CONSOLE)]
    assert not errors, "\n".join(errors)
