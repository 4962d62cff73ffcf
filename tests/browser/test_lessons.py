"""Every lesson, as a learner meets it: opened in JupyterLab in Chromium, Run All, then its main widget moved.

Lessons are found by listing ``lessons/`` (the learner copies), so a new lesson is covered the day it
lands, and fails here until it tags the cell showing its main widget with ``main-widget``.
Set SAELAB_UPDATE_DOC_SCREENSHOTS=1 to refresh the README's pictures in docs/screenshots/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from lab_harness import check_notebook
from lab_server import LabServer

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
LESSONS_DIR = REPO / "lessons"
LESSONS = sorted(LESSONS_DIR.glob("[0-9][0-9]_*.ipynb"))
DOC_SCREENSHOTS = REPO / "docs" / "screenshots"
# Browser start, kernel start and rendering on top of the lesson's own fast-mode budget.
RUN_SLACK = 1.5
RUN_SLACK_S = 30


def test_lessons_folder_has_lessons():
    assert LESSONS, f"no lessons (NN_name.ipynb) found in {LESSONS_DIR}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One server for all lessons (its start-up costs ~6 s); each lesson gets its own folder and kernel."""
    with LabServer(tmp_path_factory.mktemp("served"), tmp_path_factory.mktemp("lab")) as server:
        yield server


@pytest.mark.parametrize("lesson", LESSONS, ids=[path.stem for path in LESSONS])
def test_lesson_works_in_jupyterlab(lesson, lab, browser, screenshot_dir, lesson_budgets, lesson_reports):
    budget = lesson_budgets.get(lesson.name[:2])
    assert budget, f"{lesson.name} has no fast-mode time budget in conftest.LESSON_BUDGET_S"
    # A fresh copy of the whole folder per lesson: JupyterLab autosaves, the harness saves to read outputs
    # back, and a lesson may write files next to itself; none of that may reach the next lesson.
    folder = lab.root_dir / lesson.stem / "lessons"
    shutil.copytree(LESSONS_DIR, folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    try:
        report = check_notebook(browser, lab, folder / lesson.name, screenshot_dir,
                                run_timeout_s=budget * RUN_SLACK + RUN_SLACK_S)
    finally:
        lab.shutdown_kernels()  # the next lesson starts on a fresh kernel, and this one frees its memory
    lesson_reports.append(report)
    assert lab.running_kernels() == 0
    assert report.problems == [], report.describe()
    if "Generate" in report.pressed_texts:  # the steering panel: both replies written, the label on the slider
        texts = [" ".join(t.split()) for t in report.pressed_texts["Generate"]]
        baseline = [t for t in texts if t.startswith("baseline ")]
        steered = [t for t in texts if t.startswith("steered: feature")]
        assert baseline and steered, f"no baseline and steered reply after Generate: {texts}"
        assert len(baseline[0][len("baseline"):].strip()) > 10, f"the baseline reply is empty: {baseline[0]}"
        assert len(steered[0].split("residual norm)", 1)[-1].strip()) > 10, f"the steered reply is empty: {steered[0]}"
        shown = float(steered[0].split("clamped at ", 1)[1].split(" ", 1)[0])
        # The handle's aria-valuenow is the slider's readout, rounded to one decimal (1.75 -> "1.8").
        assert abs(shown - float(report.slider_value)) <= 0.051, (report.slider_value, steered[0])
        assert "▌" not in steered[0] and "▌" not in baseline[0], "a reply was still being written"
        assert "press Generate" not in steered[0], steered[0]  # written at the slider's setting
    if os.environ.get("SAELAB_UPDATE_DOC_SCREENSHOTS") == "1":
        DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot_dir / f"{lesson.stem}-main-widget.png", DOC_SCREENSHOTS / f"{lesson.stem}.png")
