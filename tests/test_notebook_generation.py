"""The learner's copy leaves out cells tagged test-only, which exist for the test run (e.g. driving a widget)."""

import json
from pathlib import Path

import pytest

from saelab.exercises import notebooks

LESSONS = Path(__file__).resolve().parent.parent / "lessons"


def _notebook(*cells):
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _code(source, tags=None):
    return {"cell_type": "code", "execution_count": 3, "metadata": {"tags": tags} if tags else {},
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "x"}], "source": source}


def test_a_test_only_cell_is_left_out_of_the_learners_copy_and_kept_in_the_solution():
    solution = _notebook(
        {"cell_type": "markdown", "metadata": {}, "source": "# Lesson"},
        _code("def f(x):\n    # BEGIN SOLUTION\n    return x\n    # END SOLUTION\n"),
        _code("widget", ["main-widget"]),
        _code("widget.slider.value = 1  # the test drives it", ["test-only"]),
        _code("print('after')", ["other", "test-only"]),
        _code("print('kept')", ["other"]),
    )
    learner = notebooks.learner_version(solution)
    sources = ["".join(c["source"]) for c in learner["cells"]]
    stub = "def f(x):\n    # Your code here: replace this line.\n    raise NotImplementedError()\n"
    assert sources == ["# Lesson", stub, "widget", "print('kept')"]
    assert all(c["outputs"] == [] for c in learner["cells"] if c["cell_type"] == "code")
    assert len(notebooks.strip_outputs(solution)["cells"]) == 6  # the solution keeps every cell
    assert len(solution["cells"]) == 6  # and the input is not modified


@pytest.mark.parametrize("name", ["01_superposition_in_2d.ipynb", "03_sparse_autoencoders.ipynb"])
def test_the_widget_driving_cells_of_lessons_01_and_03_are_test_only(name):
    # Driving the widget from code puts its slider back after the learner moved it: that is for the test run.
    def driving(notebook):
        sources = [(c, "".join(c["source"])) for c in notebook["cells"] if c["cell_type"] == "code"]
        return [c for c, source in sources if "explorer." in source and ".value =" in source]

    solution = json.loads((LESSONS / "solutions" / name).read_text())
    learner = json.loads((LESSONS / name).read_text())
    assert driving(solution) and all(notebooks.is_test_only(c) for c in driving(solution))
    assert driving(learner) == []
