"""Old names kept working for one release: each use warns (``DeprecationWarning``) and names the new one."""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable


def warn_renamed(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated and will be removed in the next release: use {new}", DeprecationWarning,
                  stacklevel=3)


def renamed(old: str, new_function: Callable, new: str) -> Callable:
    """A stand-in for ``old`` that warns, then calls ``new_function`` (whose public path is ``new``)."""

    @functools.wraps(new_function)
    def call_under_old_name(*args, **kwargs):
        warn_renamed(old, new)
        return new_function(*args, **kwargs)

    call_under_old_name.__name__ = old.rsplit(".", 1)[-1]
    call_under_old_name.__doc__ = f"Deprecated: use ``{new}``."
    return call_under_old_name


def moved_names(module: str, moved: dict[str, str]) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for names that moved: ``moved`` maps an old name to ``"package.module.name"``.

    ``from module import old`` and ``module.old`` still work, warn once per use and return the new object.
    """

    def __getattr__(name: str):
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new_module, new_name = moved[name].rsplit(".", 1)
        warnings.warn(f"{module}.{name} has moved to {moved[name]}; the old import will be removed in the next "
                      "release", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(new_module), new_name)

    return __getattr__
