"""Old call shapes, kept working for one release with a ``DeprecationWarning`` that names the new call.

Calls that take an SAE now read ``f(model, sae, data, *, options)``: the hook point comes from the SAE
(``sae.cfg.hook_name``), and ``hook_name=`` overrides it. Before, some took ``hook_name`` before the data
and others as an optional positional argument after it; these helpers recognise both and warn.
"""

from __future__ import annotations

import warnings
from typing import Any


def warn(old: str, new: str, stacklevel: int = 4) -> None:
    """Warn, pointing at the caller of the deprecated function (by default: helper -> function -> caller)."""
    warnings.warn(f"{old} is deprecated and goes in the next release: call {new}", DeprecationWarning,
                  stacklevel=stacklevel)


def hook_before_data(new_call: str, hook_name: str, rest: tuple, override: str | None) -> tuple[str, Any, tuple]:
    """The old shape ``f(model, sae, hook_name, data, ...)``: warn; return ``(hook_name, data, rest)``."""
    warn("passing hook_name before the data", f"{new_call} (the SAE knows its hook; hook_name=... overrides it)")
    if override is not None or not rest:
        raise TypeError(f"call {new_call}, giving hook_name at most once, as a keyword")
    return hook_name, rest[0], rest[1:]


def positional_hook(new_call: str, extra: tuple, override: str | None) -> str | None:
    """The old optional positional ``hook_name`` after the data (``extra``, the call's surplus arguments)."""
    if not extra:
        return override
    if len(extra) > 1 or override is not None or not isinstance(extra[0], (str, type(None))):
        raise TypeError(f"call {new_call}, giving hook_name at most once, as a keyword")
    warn("passing hook_name by position", f"{new_call} with hook_name=... (or without: the SAE knows its hook)")
    return extra[0]
