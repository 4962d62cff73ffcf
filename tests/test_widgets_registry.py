"""saelab.widgets resolves every widget it lists, lazily, and nothing else."""

import importlib

import pytest

from saelab import widgets


def test_every_listed_widget_resolves_to_a_function_of_that_name():
    assert len(dir(widgets)) >= 5
    for module in set(widgets._WHERE.values()):  # an imported submodule named like its widget would shadow it
        importlib.import_module(module)
    for name in dir(widgets):
        function = getattr(widgets, name)
        assert callable(function) and function.__name__ == name


def test_an_unknown_widget_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'steering'"):
        widgets.steering
