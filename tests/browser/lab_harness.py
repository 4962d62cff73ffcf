"""Drive one notebook in JupyterLab as a learner would, and list everything a learner would see go wrong.

``check_notebook`` opens the notebook, runs all cells, waits for the kernel to settle, then moves the
first slider (or presses the first button) of the cell tagged ``main-widget`` with the keyboard and
requires the visible output to change. A main-widget cell tagged ``press:<label>`` (e.g. ``press:Generate``)
then has the button with that label pressed too, again requiring a change; the widget texts shown afterwards
are kept in the report for the test to check. It returns every problem it saw instead of stopping at the
first, so one run of a broken lesson tells the whole story.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlparse

from kernel_messages import KernelMessageLog

MAIN_WIDGET_TAG = "main-widget"
PRESS_TAG_PREFIX = "press:"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
NETWORK_SCHEMES = {"http", "https", "ws", "wss", "ftp"}
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
BROKEN_WIDGET_TEXTS = ("Loading widget...", "Error displaying widget")
VIEWPORT = {"width": 1440, "height": 900}  # a common laptop screen
IDLE_GRACE_S = 3.0  # how long a still output may stay still once the kernel is idle after an interaction

JS_DIR = Path(__file__).with_name("js")
READ_CELLS_JS = (JS_DIR / "read_cells.js").read_text()
OUTPUT_SIGNATURE_JS = (JS_DIR / "output_signature.js").read_text()


@dataclass
class NotebookReport:
    """What one notebook run showed: problems (empty when all is well), phase times, screenshots."""

    notebook: str
    problems: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    screenshots: list[Path] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    slider_value: str | None = None
    """The main widget's first slider after the interaction (aria-valuenow), if it has one."""
    pressed_texts: dict[str, list[str]] = field(default_factory=dict)
    """Per ``press:<label>`` tag: the texts of the cell's HTML widgets once that press's work had settled."""

    def describe(self) -> str:
        lines = [f"{self.notebook}: {len(self.problems)} problem(s) seen in the browser"]
        lines += [f"  - {problem}" for problem in self.problems]
        if self.console_errors:
            lines.append("  browser console errors (context):")
            lines += [f"    {text[:300]}" for text in self.console_errors[:10]]
        if self.screenshots:
            lines.append(f"  screenshots: {', '.join(str(p) for p in self.screenshots)}")
        return "\n".join(lines)


def main_widget_cell_index(notebook_path: Path) -> int | None:
    """Index (among all cells) of the first cell tagged ``main-widget``, or None."""
    cells = json.loads(Path(notebook_path).read_text())["cells"]
    for index, cell in enumerate(cells):
        if MAIN_WIDGET_TAG in cell.get("metadata", {}).get("tags", []):
            return index
    return None


def main_widget_presses(notebook_path: Path) -> list[str]:
    """Button labels the main widget's cell asks to have pressed after its first interaction (``press:<label>``)."""
    index = main_widget_cell_index(notebook_path)
    if index is None:
        return []
    tags = json.loads(Path(notebook_path).read_text())["cells"][index].get("metadata", {}).get("tags", [])
    return [tag[len(PRESS_TAG_PREFIX):] for tag in tags if tag.startswith(PRESS_TAG_PREFIX)]


def is_outside_url(url: str) -> bool:
    """True for a network URL whose host is not this machine (data:, blob: and about: are not network)."""
    parsed = urlparse(url)
    return parsed.scheme in NETWORK_SCHEMES and (parsed.hostname or "") not in LOCAL_HOSTS


class _Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() > self.end


def check_notebook(browser, server, notebook_path: Path, screenshot_dir: Path,
                   run_timeout_s: float, interact_timeout_s: float = 60.0) -> NotebookReport:
    """Open ``notebook_path`` (inside ``server.root_dir``) in a fresh browser context and check it."""
    notebook_path = Path(notebook_path)
    report = NotebookReport(notebook=notebook_path.name)
    started = time.monotonic()
    outside_requests: list[str] = []
    kernel_log = KernelMessageLog()

    context = browser.new_context(viewport=VIEWPORT)
    # Record every request to another host, and refuse it, so an offline machine fails fast and loudly.
    context.on("request", lambda request: is_outside_url(request.url) and outside_requests.append(request.url))
    context.route(is_outside_url, lambda route: route.abort())
    page = context.new_page()
    page.on("websocket", lambda ws: _watch_websocket(ws, kernel_log, outside_requests))
    page.on("pageerror", lambda error: report.problems.append(f"uncaught JavaScript error: {error}"))
    page.on("console", lambda msg: msg.type == "error" and report.console_errors.append(msg.text))
    try:
        relative = notebook_path.relative_to(server.root_dir).as_posix()
        page.goto(f"{server.url}/lab/tree/{quote(relative)}?reset")
        _wait_for_kernel(page, report, _Deadline(90))
        report.seconds["open"] = time.monotonic() - started

        phase = time.monotonic()
        _run_all(page)
        finished = _wait_until_settled(page, _Deadline(run_timeout_s))
        report.seconds["run_all"] = time.monotonic() - phase
        if not finished:
            report.problems.append(f"Run All did not finish within {run_timeout_s:.0f} s")
        _wait_for_widgets(page, _Deadline(15))
        saved = _save_and_read(page, notebook_path, _Deadline(20))
        report.problems += _cell_problems(page, saved)

        phase = time.monotonic()
        main_index = main_widget_cell_index(notebook_path)
        if main_index is None:
            report.problems.append(f"no cell is tagged '{MAIN_WIDGET_TAG}', so its widget is never exercised")
        else:
            cell = page.locator(".jp-Notebook .jp-Cell").nth(main_index)
            cell.scroll_into_view_if_needed()
            problem = _interact(page, cell, main_index, _Deadline(interact_timeout_s))
            if problem:
                report.problems.append(problem)
            handles = cell.locator(".jp-OutputArea .noUi-handle")
            report.slider_value = handles.first.get_attribute("aria-valuenow") if handles.count() else None
            for label in main_widget_presses(notebook_path):
                problem = _press(page, cell, main_index, label, _Deadline(run_timeout_s))
                if problem:
                    report.problems.append(problem)
                report.pressed_texts[label] = cell.locator(".jp-OutputArea .widget-html-content").all_inner_texts()
            # Errors shown by the interaction itself (e.g. a traceback printed into an Output widget).
            report.problems += [p for p in _cell_problems(page, saved) if p not in report.problems]
        report.seconds["interact"] = time.monotonic() - phase
        report.screenshots = _screenshots(page, main_index, notebook_path.stem, screenshot_dir)
    finally:
        if not report.screenshots:  # the check stopped early: still show what the page looked like
            folder = Path(screenshot_dir)
            folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(folder / f"{notebook_path.stem}.png"))
            report.screenshots = [folder / f"{notebook_path.stem}.png"]
        report.problems += [f"kernel error outside any cell (e.g. a widget callback): {text}"
                            for text in kernel_log.errors_outside_cells()]
        report.problems += [f"request to a host other than this machine: {url}"
                            for url in dict.fromkeys(outside_requests)]
        context.close()
        report.seconds["total"] = time.monotonic() - started
    return report


def _watch_websocket(ws, kernel_log: KernelMessageLog, outside_requests: list[str]) -> None:
    if is_outside_url(ws.url):
        outside_requests.append(ws.url)
    if "/api/kernels/" in ws.url:
        ws.on("framereceived", kernel_log.add_frame)


def _wait_for_kernel(page, report: NotebookReport, deadline: _Deadline) -> None:
    """Wait for the notebook's kernel to be idle, accepting the "Select Kernel" dialog if it appears."""
    page.wait_for_selector(".jp-NotebookPanel", timeout=60_000)
    while not deadline.passed():
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            text = dialog.first.inner_text()
            if "Select Kernel" not in text:
                report.problems.append(f"unexpected dialog on opening: {' '.join(text.split())[:200]}")
            dialog.first.locator(".jp-Dialog-button.jp-mod-accept").click()
        elif _notebook_state(page)["kernel"] == "idle":
            return
        page.wait_for_timeout(250)
    raise TimeoutError("the notebook's kernel did not become idle after opening")


def _run_all(page) -> None:
    page.locator(".lm-MenuBar-itemLabel:text-is('Run')").click()
    page.locator(".lm-Menu-itemLabel:text-is('Run All Cells')").click()


def _notebook_state(page) -> dict:
    """Kernel status as the status bar shows it ("Python 3 (ipykernel) | Idle") and the cells' prompts.

    The toolbar's execution indicator says "idle" before any kernel exists, so it is not enough alone.
    """
    return page.evaluate("""() => {
        const items = [...document.querySelectorAll('.jp-StatusBar-TextItem')].map(e => e.textContent.trim());
        const kernel = items.find(t => / \\| \\w+$/.test(t) && !t.startsWith('No Kernel'));
        return {
            kernel: kernel ? kernel.split('|').pop().trim().toLowerCase() : 'none',
            indicator: document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator')?.dataset.status,
            prompts: [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
                       .map(p => p.textContent.trim()),
        };
    }""")


def _wait_until_settled(page, deadline: _Deadline) -> bool:
    """True once the kernel is idle and no cell is queued or running, twice in a row half a second apart."""
    calm = 0
    while not deadline.passed():
        state = _notebook_state(page)
        busy = (state["kernel"], state["indicator"]) != ("idle", "idle") or any("*" in p for p in state["prompts"])
        calm = 0 if busy else calm + 1
        if calm >= 2:
            return True
        page.wait_for_timeout(500)
    return False


def _wait_for_widgets(page, deadline: _Deadline) -> None:
    """Give widget views time to leave "Loading widget..." (a real failure stays that way)."""
    while not deadline.passed():
        text = page.locator(".jp-Notebook .jp-OutputArea").all_inner_texts()
        if not any("Loading widget..." in t for t in text):
            return
        page.wait_for_timeout(500)


def _save_and_read(page, notebook_path: Path, deadline: _Deadline) -> dict | None:
    """Save the (scratch copy of the) notebook and read it back: it tells which outputs are widgets."""
    before = notebook_path.stat().st_mtime_ns
    page.locator(".jp-NotebookPanel .jp-Notebook").first.focus()
    page.keyboard.press("Control+s")
    while not deadline.passed():
        if notebook_path.stat().st_mtime_ns != before:
            page.wait_for_timeout(300)  # the write is atomic, but let a second autosave pass
            return json.loads(notebook_path.read_text())
        page.wait_for_timeout(250)
    return None


def _cell_problems(page, saved: dict | None) -> list[str]:
    """Errors, stuck or broken widgets, widgets shown as plain text, and cells Run All never reached."""
    cells = page.evaluate(READ_CELLS_JS)
    problems = []
    if saved is None:
        problems.append("could not save the scratch copy to read the outputs back, so whether each widget "
                        "rendered as a widget was not checked")
    if saved is not None and len(saved["cells"]) != len(cells):
        problems.append(f"the page shows {len(cells)} cells but the notebook has {len(saved['cells'])}")
        saved = None
    for cell in cells:
        where = f"cell {cell['index']}"
        if cell["kind"] == "code" and saved is not None and not cell["executed"]:
            problems.append(f"{where} was never run (Run All stopped before it)")
        for error in cell["errors"]:
            problems.append(f"{where} shows an error: {error}")
        if cell["error_views"]:
            problems.append(f"{where} shows {cell['error_views']} widget(s) that failed to render "
                            "('Click to show javascript error.'; see the browser console errors below)")
        for text in BROKEN_WIDGET_TEXTS:
            if text in cell["text"]:
                problems.append(f"{where} shows '{text}' instead of a widget")
        if saved is None:
            continue
        outputs = saved["cells"][cell["index"]].get("outputs", [])
        expected = sum(WIDGET_VIEW_MIME in output.get("data", {}) for output in outputs)
        if cell["widget_views"] < expected:
            shown = "; ".join(t[:120] for t in cell["plain_texts"]) or "nothing"
            problems.append(f"{where} should show {expected} widget(s) but renders {cell['widget_views']}; "
                            f"it shows as text: {shown}")
    return problems


def _output_signature(cell) -> str:
    return cell.evaluate(OUTPUT_SIGNATURE_JS)


def _interact(page, cell, index: int, deadline: _Deadline) -> str | None:
    """Move the first slider (keyboard on its handle) or press the first button; None if the output changed."""
    handles = cell.locator(".jp-OutputArea .noUi-handle")
    buttons = cell.locator(".jp-OutputArea button.jupyter-button")
    before = _output_signature(cell)
    if handles.count():
        handle = handles.first
        now, top = (float(handle.get_attribute(a) or 0) for a in ("aria-valuenow", "aria-valuemax"))
        key = "ArrowLeft" if now >= top else "ArrowRight"
        handle.focus()
        for _ in range(3):
            handle.press(key)
        action = f"moving the first slider of cell {index} ({key} x3 on its handle)"
    elif buttons.count():
        buttons.first.click()
        action = f"pressing the first button of cell {index} ('{buttons.first.inner_text()}')"
    else:
        return f"cell {index} is tagged '{MAIN_WIDGET_TAG}' but shows no slider or button"
    acted = time.monotonic()
    changed = False
    while not deadline.passed():
        page.wait_for_timeout(500)
        changed = _output_signature(cell) != before
        if changed and _wait_until_settled(page, _Deadline(deadline.end - time.monotonic())):
            page.wait_for_timeout(500)  # let the last redraw land before the screenshot
            return None
        # The kernel handled the change and went idle again, yet nothing moved: give up early.
        if not changed and time.monotonic() - acted > IDLE_GRACE_S and _notebook_state(page)["kernel"] == "idle":
            break
    if changed:
        return f"{action} started work that did not finish in time"
    return f"{action} did not change the visible output (plot data and text stayed the same)"


def _press(page, cell, index: int, label: str, deadline: _Deadline) -> str | None:
    """Press the button labelled ``label`` in the cell; None once the output changed and the kernel settled."""
    button = cell.locator(".jp-OutputArea button.jupyter-button", has_text=label)
    if not button.count():
        return f"cell {index} is tagged '{PRESS_TAG_PREFIX}{label}' but shows no button labelled {label!r}"
    before = _output_signature(cell)
    button.first.click()
    changed, last, still_since = False, before, time.monotonic()
    while not deadline.passed():
        page.wait_for_timeout(500)
        now = _output_signature(cell)
        if now != last:  # still being written (a streamed reply redraws after every token)
            changed, last, still_since = True, now, time.monotonic()
        elif changed and time.monotonic() - still_since > 3 and _wait_until_settled(page, deadline):
            return None
    return f"pressing {label!r} in cell {index} did not change the output and settle in time"


def _screenshots(page, main_index: int | None, stem: str, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    page.mouse.move(2, VIEWPORT["height"] - 2)  # park the pointer on the status bar: no hover styling
    whole = folder / f"{stem}.png"
    page.screenshot(path=str(whole))
    paths = [whole]
    if main_index is not None:
        widget = folder / f"{stem}-main-widget.png"
        cell = page.locator(".jp-Notebook .jp-Cell").nth(main_index)
        output = cell.locator(".jp-Cell-outputArea")
        box = output.bounding_box() if output.count() else None
        # A cell that never ran has an empty, invisible output area: show the whole cell instead.
        (output if box and box["height"] > 1 else cell).screenshot(path=str(widget), timeout=10_000)
        paths.append(widget)
    return paths
