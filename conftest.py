"""Test-wide settings: lessons run in fast mode, with the hub unreachable, each under its own time budget."""

import os
import re

import pytest

os.environ.setdefault("SAELAB_FAST", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Fast-mode budget per lesson (seconds), by lesson number. A lesson without a budget fails the suite.
LESSON_BUDGET_S = {"01": 90, "02": 90, "03": 120, "04": 180, "05": 180, "06": 180, "07": 180, "08": 180}


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = str(item.fspath)
        if not path.endswith(".ipynb"):
            continue
        number = re.match(r"(\d\d)_", os.path.basename(path))
        budget = LESSON_BUDGET_S.get(number.group(1)) if number else None
        if budget is None:
            raise pytest.UsageError(f"lesson {path} has no fast-mode time budget in conftest.LESSON_BUDGET_S")
        item.add_marker(pytest.mark.timeout(budget))
