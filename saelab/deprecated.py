"""Old names and old call shapes, kept working for one release with a ``DeprecationWarning`` that names the new call.

Calls that take an SAE now read ``f(model, sae, data, *, options)``: the hook point comes from the SAE
(``sae.cfg.hook_name``), and ``hook_name=`` overrides it. Before, some took ``hook_name`` before the data
and others as an optional positional argument after it; these helpers recognise both and warn.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable


def warn(old: str, new: str, stacklevel: int = 4) -> None:
    """Warn, pointing at the caller of the deprecated function (by default: helper -> function -> caller)."""
    warnings.warn(f"{old} is deprecated and goes in the next release: call {new}", DeprecationWarning,
                  stacklevel=stacklevel)


def hook_first(new_call: str, args: tuple, hook_name: str | None, *, old: bool, takes: int) -> tuple[tuple, str | None]:
    """``args``, the positional arguments after ``model, sae``: ``takes`` of them in the new shape; with ``old``
    (the caller's test of the old shape), a hook name comes first. Return ``(args, hook_name)`` in the new shape."""
    if old:
        warn("passing hook_name before the data", f"{new_call} (the SAE knows its hook; hook_name=... overrides it)")
        if hook_name is not None:
            raise TypeError(f"call {new_call}, giving hook_name at most once, as a keyword")
        args, hook_name = args[1:], args[0]
    if len(args) != takes:
        raise TypeError(f"call {new_call}: {len(args)} positional arguments after model, sae where it takes {takes}; "
                        "options are keywords")
    return args, hook_name


def positional_hook(new_call: str, extra: tuple, override: str | None) -> str | None:
    """The old optional positional ``hook_name`` after the data (``extra``, the call's surplus arguments)."""
    if not extra:
        return override
    if len(extra) > 1 or override is not None or not isinstance(extra[0], (str, type(None))):
        raise TypeError(f"call {new_call}, giving hook_name at most once, as a keyword")
    warn("passing hook_name by position", f"{new_call} with hook_name=... (or without: the SAE knows its hook)")
    return extra[0]


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
