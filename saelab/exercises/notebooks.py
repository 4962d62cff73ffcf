"""Learner notebooks are generated from the solution notebooks, so there is one source per lesson.

In ``lessons/solutions/NN_name.ipynb`` an exercise's answer sits between two marker lines::

    def dimensionality(W):
        # BEGIN SOLUTION
        ...the answer...
        # END SOLUTION

``lessons/NN_name.ipynb`` is the same notebook with each such block replaced by
``raise NotImplementedError`` (same indentation) and all outputs removed. A cell tagged ``test-only`` (e.g.
one that drives a widget from code for the test run, and would reset a slider the learner just moved) is left
out of the learner's copy. Regenerate after editing a solution:

    python -m saelab.exercises.notebooks lessons/
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
STUB = "{indent}# Your code here: replace this line.\n{indent}raise NotImplementedError()\n"
TEST_ONLY = "test-only"


def hide_solutions(source: str) -> str:
    """Replace every marked solution block in one cell's source with a stub that raises."""
    out, indent, inside = [], "", False
    for line in source.splitlines(keepends=True):
        begin = BEGIN.match(line)
        if begin and not inside:
            inside, indent = True, begin.group(1)
            out.append(STUB.format(indent=indent))
        elif END.match(line) and inside:
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("a '# BEGIN SOLUTION' has no matching '# END SOLUTION'")
    text = "".join(out)
    return text[:-1] if text.endswith("\n") and not source.endswith("\n") else text


def strip_outputs(notebook: dict) -> dict:
    """Drop outputs, execution counts and saved widget state (what nbstripout removes)."""
    notebook = json.loads(json.dumps(notebook))
    notebook.get("metadata", {}).pop("widgets", None)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cell.get("metadata", {}).pop("execution", None)
    return notebook


def is_test_only(cell: dict) -> bool:
    """A cell that exists for the test run only (tagged ``test-only``), not for the learner."""
    return TEST_ONLY in cell.get("metadata", {}).get("tags", [])


def learner_version(solution: dict) -> dict:
    """The learner's notebook made from the solution notebook: solutions stubbed, test-only cells dropped."""
    notebook = strip_outputs(solution)
    notebook["cells"] = [cell for cell in notebook["cells"] if not is_test_only(cell)]
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = hide_solutions(source)
    return notebook


def dumps(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def build(lessons: Path) -> list[Path]:
    """Write ``lessons/NN_name.ipynb`` for every ``lessons/solutions/NN_name.ipynb``; return the paths written."""
    written = []
    for solution_path in sorted((lessons / "solutions").glob("*.ipynb")):
        solution = json.loads(solution_path.read_text())
        solution_path.write_text(dumps(strip_outputs(solution)))
        target = lessons / solution_path.name
        target.write_text(dumps(learner_version(solution)))
        written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", type=Path, help="the lessons folder (holding solutions/)")
    for path in build(parser.parse_args().lessons):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
