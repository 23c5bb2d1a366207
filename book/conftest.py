"""nbval settings for the book: compare only the cells marked `# NBVAL_CHECK_OUTPUT` (run with
--nbval-lax), ignore the outputs that legitimately change between runs, run headless."""

import os

os.environ.setdefault("DFPT_HEADLESS", "1")  # inherited by the kernels nbval starts

SKIP_COMPARE = (
    "text/html",
    "application/javascript",
    "application/vnd.plotly.v1+json",
    "application/vnd.jupyter.widget-view+json",
    "image/png",
    "stderr",
)


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += SKIP_COMPARE
