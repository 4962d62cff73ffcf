"""The harness itself: it passes a working widget and catches each way a lesson can fail a learner.

Each case is a small notebook written to a scratch folder, on the same stack as the lessons
(ipywidgets sliders and buttons, plotly FigureWidget through anywidget).
"""

from __future__ import annotations

import json

import pytest
from kernel_messages import KernelMessageLog, parse_frame
from lab_harness import check_notebook, is_outside_url, main_widget_cell_index
from lab_server import ANYWIDGET_EXTENSION, WIDGET_MANAGER_EXTENSION, LabServer

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

RUN_TIMEOUT_S = 60
IMPORTS = "import ipywidgets as widgets\nimport numpy as np\nimport plotly.graph_objects as go"
# A slider redrawing a FigureWidget and a label: the shape of every lesson's main widget.
SLIDER_EXPLORER = """\
fig = go.FigureWidget(go.Scatter(x=np.arange(5), y=np.zeros(5)))
slider = widgets.FloatSlider(value=0.2, min=0, max=1, step=0.1, description="scale")
label = widgets.Label("scale = 0.2")
def redraw(change):
    fig.data[0].y = np.arange(5) * {factor}
    label.value = f"scale = {{slider.value:.1f}}"
slider.observe(redraw, "value")
widgets.VBox([slider, label, fig])"""
BUTTON_EXPLORER = """\
out = widgets.Output()
button = widgets.Button(description="Sample")
presses = []
def sample(_):
    presses.append(1)
    with out:
        out.clear_output()
        print(f"sampled {len(presses)} time(s)")
button.on_click(sample)
widgets.VBox([button, out])"""


def write_notebook(path, cells, kernelspec=True):
    """cells: (source, tags) pairs; code cells unless the source starts with '#md '."""
    def cell(source, tags):
        if source.startswith("#md "):
            return {"cell_type": "markdown", "metadata": {}, "source": source[4:]}
        return {"cell_type": "code", "execution_count": None, "metadata": {"tags": tags},
                "outputs": [], "source": source}
    metadata = {"language_info": {"name": "python"}}
    if kernelspec:
        metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    notebook = {"cells": [cell(*c) for c in cells], "metadata": metadata, "nbformat": 4, "nbformat_minor": 4}
    path.write_text(json.dumps(notebook, indent=1))
    return path


def explorer_notebook(path, main_source, kernelspec=True, extra=()):
    return write_notebook(path, [("#md # A scratch lesson", []), (IMPORTS + "\nprint('ready')", []),
                                 *extra, (main_source, ["main-widget"])], kernelspec)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("notebooks")


@pytest.fixture(scope="module")
def server(scratch, tmp_path_factory):
    with LabServer(scratch, tmp_path_factory.mktemp("lab")) as lab:
        yield lab


def check(browser, lab, notebook, tmp_path):
    try:
        return check_notebook(browser, lab, notebook, tmp_path / "shots", run_timeout_s=RUN_TIMEOUT_S)
    finally:
        lab.shutdown_kernels()


def test_working_slider_explorer_passes(browser, server, scratch, tmp_path):
    # No kernelspec in the file: JupyterLab asks "Select Kernel", which the harness must answer.
    notebook = explorer_notebook(scratch / "good_slider.ipynb", SLIDER_EXPLORER.format(factor="slider.value"),
                                 kernelspec=False)
    report = check(browser, server, notebook, tmp_path)
    assert report.problems == [], report.describe()
    assert [p.name for p in report.screenshots] == ["good_slider.png", "good_slider-main-widget.png"]
    assert all(p.stat().st_size > 5_000 for p in report.screenshots)


def test_working_button_explorer_passes(browser, server, scratch, tmp_path):
    notebook = explorer_notebook(scratch / "good_button.ipynb", BUTTON_EXPLORER)
    report = check(browser, server, notebook, tmp_path)
    assert report.problems == [], report.describe()


def test_exception_in_slider_callback_fails(browser, server, scratch, tmp_path):
    notebook = explorer_notebook(scratch / "callback_raises.ipynb", SLIDER_EXPLORER.format(factor="(1 / 0)"))
    report = check(browser, server, notebook, tmp_path)
    assert any("did not change the visible output" in p for p in report.problems), report.describe()
    assert any("widget callback" in p and "ZeroDivisionError" in p for p in report.problems), report.describe()


def test_exception_after_a_partial_redraw_fails(browser, server, scratch, tmp_path):
    # The label moves, so the output did change; the traceback only reaches JupyterLab's log console.
    source = SLIDER_EXPLORER.format(factor="slider.value").replace(
        '    label.value = f"scale = {slider.value:.1f}"',
        '    label.value = f"scale = {slider.value:.1f}"\n    raise KeyError("missing feature")')
    report = check(browser, server, explorer_notebook(scratch / "partial.ipynb", source), tmp_path)
    assert report.problems == ["kernel error outside any cell (e.g. a widget callback): KeyError: 'missing feature'"], \
        report.describe()


# A widget view whose model the kernel never created: what a learner sees after a kernel restart.
DANGLING_VIEW = """from IPython.display import display
display({"application/vnd.jupyter.widget-view+json": {"model_id": "0" * 32, "version_major": 2,
        "version_minor": 0}, "text/plain": "FloatSlider(value=0.2)"}, raw=True)"""


def test_cell_error_broken_view_and_cells_never_run_fail(browser, server, scratch, tmp_path):
    notebook = explorer_notebook(scratch / "cell_raises.ipynb", SLIDER_EXPLORER.format(factor="slider.value"),
                                 extra=[(DANGLING_VIEW, []), ("raise ValueError('the data file is missing')", [])])
    report = check(browser, server, notebook, tmp_path)
    assert any("cell 2 shows 'Error displaying widget' instead of a widget" in p for p in report.problems), \
        report.describe()
    assert any("cell 3 shows an error" in p and "the data file is missing" in p for p in report.problems), \
        report.describe()
    assert any("cell 4 was never run" in p for p in report.problems), report.describe()


def test_outside_request_and_missing_main_widget_tag_fail(browser, server, scratch, tmp_path):
    # An HTML output that pulls an image from a CDN (as a plot with the wrong renderer would), and no cell
    # tagged main-widget (as a new lesson that forgot it): two problems, both reported, nothing else.
    fetch = "from IPython.display import HTML\nHTML('<img src=\"https://cdn.example.org/plotly.png\">')"
    notebook = write_notebook(scratch / "untagged_cdn.ipynb", [(IMPORTS, []), (fetch, []),
                                                              (SLIDER_EXPLORER.format(factor="1"), [])])
    report = check(browser, server, notebook, tmp_path)
    assert report.problems == ["no cell is tagged 'main-widget', so its widget is never exercised",
                               "request to a host other than this machine: https://cdn.example.org/plotly.png"], \
        report.describe()


@pytest.mark.parametrize(("extension", "symptom"), [
    # No widget manager: JupyterLab falls back to the text repr, "VBox(children=(FloatSlider(...".
    (WIDGET_MANAGER_EXTENSION, "should show 1 widget(s) but renders 0; it shows as text: VBox(children="),
    # No anywidget: the slider and label draw, plotly's FigureWidget becomes an error box.
    (ANYWIDGET_EXTENSION, "shows 1 widget(s) that failed to render"),
], ids=["no-widget-manager", "no-anywidget"])
def test_missing_widget_frontend_fails(extension, symptom, browser, scratch, tmp_path):
    notebook = explorer_notebook(scratch / f"no_frontend_{extension.strip('@').replace('/', '_')}.ipynb",
                                 SLIDER_EXPLORER.format(factor="slider.value"))
    with LabServer(scratch, tmp_path / "lab", disabled_extensions=(extension,)) as lab:
        report = check(browser, lab, notebook, tmp_path)
    assert any(symptom in p for p in report.problems), report.describe()


# Pieces without a browser: these make the failure messages above trustworthy.

def test_outside_url_rule():
    assert not is_outside_url("http://127.0.0.1:8888/lab")
    assert not is_outside_url("ws://localhost:1/api/kernels/x/channels")
    assert not is_outside_url("data:image/png;base64,AAAA")
    assert is_outside_url("https://cdn.plot.ly/plotly-2.35.2.min.js")
    assert is_outside_url("http://127.0.0.1.example.org/x")


def test_main_widget_cell_is_found_by_tag(tmp_path):
    notebook = write_notebook(tmp_path / "n.ipynb", [("#md # title", []), ("1", []), ("2", ["main-widget"])])
    assert main_widget_cell_index(notebook) == 2
    assert main_widget_cell_index(write_notebook(tmp_path / "m.ipynb", [("1", ["other"])])) is None


def _binary_frame(channel, header, parent, content):
    parts = [channel.encode(), *(json.dumps(x).encode() for x in (header, parent, {}, content))]
    offsets, position = [], 8 * (len(parts) + 2)
    for part in parts:
        offsets.append(position)
        position += len(part)
    offsets.append(position)
    head = len(offsets).to_bytes(8, "little") + b"".join(o.to_bytes(8, "little") for o in offsets)
    return head + b"".join(parts)


def test_kernel_errors_outside_cells_are_collected():
    callback_error = _binary_frame("iopub", {"msg_type": "error"}, {"msg_type": "comm_msg"},
                                   {"ename": "ZeroDivisionError", "evalue": "division by zero"})
    cell_error = _binary_frame("iopub", {"msg_type": "error"}, {"msg_type": "execute_request"},
                               {"ename": "ValueError", "evalue": "shown in the cell"})
    logged = _binary_frame("iopub", {"msg_type": "stream"}, {"msg_type": "comm_msg"},
                           {"name": "stderr", "text": "Traceback (most recent call last):\n ...\nKeyError: 'x'\n"})
    assert parse_frame(callback_error)[0] == "iopub"
    log = KernelMessageLog()
    for frame in (callback_error, cell_error, logged, callback_error):
        log.add_frame(frame)
    assert log.errors_outside_cells() == ["ZeroDivisionError: division by zero", "KeyError: 'x'"]
