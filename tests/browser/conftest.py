"""Fixtures for the browser suite: one headless Chromium per run, a screenshot folder, lesson budgets.

The suite needs Chromium (Debian/Ubuntu: ``apt-get install chromium``); Playwright drives that binary,
so no Playwright browser download is needed. Run it with ``pytest -m browser``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DEFAULT_SCREENSHOT_DIR = REPO / "artifacts" / "browser-screenshots"


def chromium_executable() -> str:
    """The Chromium to drive: $SAELAB_CHROMIUM, else the first Chromium/Chrome on PATH."""
    chosen = os.environ.get("SAELAB_CHROMIUM")
    found = chosen if chosen else next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if not found or not Path(found).exists():
        raise pytest.UsageError(
            "the browser suite needs Chromium: install it (apt-get install chromium) "
            "or set SAELAB_CHROMIUM to a Chromium/Chrome executable")
    return found


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    """Where each lesson's screenshots go ($SAELAB_SCREENSHOT_DIR, else artifacts/browser-screenshots)."""
    folder = Path(os.environ.get("SAELAB_SCREENSHOT_DIR", DEFAULT_SCREENSHOT_DIR)).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def lesson_budgets(request) -> dict[str, float]:
    """The fast-mode time budget per lesson number, from the top-level conftest (one source of truth)."""
    for plugin in request.config.pluginmanager.get_plugins():
        budgets = getattr(plugin, "LESSON_BUDGET_S", None)
        if isinstance(budgets, dict):
            return budgets
    raise LookupError("LESSON_BUDGET_S not found in the top-level conftest.py")


_REPORTS: list = []


@pytest.fixture(scope="session")
def lesson_reports() -> list:
    """Each lesson's NotebookReport, for the timing table printed at the end of the run."""
    return _REPORTS


def pytest_terminal_summary(terminalreporter):
    if not _REPORTS:
        return
    phases = ("open", "run_all", "interact", "total")
    lines = [f"{'lesson':<40}" + "".join(f"{p:>10}" for p in phases) + "   problems"]
    for report in _REPORTS:
        lines.append(f"{report.notebook:<40}" + "".join(f"{report.seconds.get(p, 0):>10.1f}" for p in phases)
                     + f"   {len(report.problems)}")
    lines.append(f"{'all lessons':<40}{'':>30}{sum(r.seconds.get('total', 0) for r in _REPORTS):>10.1f}")
    folder = Path(os.environ.get("SAELAB_SCREENSHOT_DIR", DEFAULT_SCREENSHOT_DIR)).resolve()
    if folder.is_dir():
        (folder / "timings.txt").write_text("\n".join(lines) + "\n")
    terminalreporter.write_sep("-", "lessons in JupyterLab: seconds per phase")
    for line in lines:
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"screenshots: {folder}")
