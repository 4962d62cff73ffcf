"""Lesson notebooks: one source (the solutions), learner copies generated from it, no stored outputs."""

import importlib.util
import json
from pathlib import Path

import pytest

from saelab.exercises import notebooks

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
_spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
root_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(root_conftest)
SOLUTIONS = sorted((LESSONS / "solutions").glob("*.ipynb"))


def test_hiding_a_solution_keeps_the_signature_and_indentation():
    source = "def f(x):\n    # BEGIN SOLUTION\n    return x + 1\n    # END SOLUTION\n\n\ncheck(f)"
    assert notebooks.hide_solutions(source) == (
        "def f(x):\n    # Your code here: replace this line.\n    raise NotImplementedError()\n\n\ncheck(f)")
    with pytest.raises(ValueError, match="no matching"):
        notebooks.hide_solutions("# BEGIN SOLUTION\nx = 1\n")


def test_there_are_lessons_and_each_has_its_learner_copy():
    assert len(SOLUTIONS) >= 2
    learner_copies = sorted(p.name for p in LESSONS.glob("*.ipynb"))
    assert learner_copies == [p.name for p in SOLUTIONS]


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_learner_copy_is_generated_from_the_solution(solution):
    expected = notebooks.dumps(notebooks.learner_version(json.loads(solution.read_text())))
    assert (LESSONS / solution.name).read_text() == expected, (
        f"lessons/{solution.name} is out of date: run `python -m saelab.exercises.notebooks lessons/`")
    assert "# BEGIN SOLUTION" not in expected


@pytest.mark.parametrize("path", SOLUTIONS + sorted(LESSONS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    notebook = json.loads(path.read_text())
    assert "widgets" not in notebook.get("metadata", {}), f"{path.name} stores widget state"
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None, f"{path.name} stores outputs"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_each_lesson_has_a_time_budget_a_main_widget_and_a_recap(solution):
    assert solution.name[:2] in root_conftest.LESSON_BUDGET_S
    notebook = json.loads(solution.read_text())
    tags = [tag for cell in notebook["cells"] for tag in cell.get("metadata", {}).get("tags", [])]
    assert tags.count("main-widget") == 1, "tag exactly one cell 'main-widget' (the browser test drives it)"
    text = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown")
    assert "By the end you will be able to" in text and "## Recap" in text
