"""How many threads torch uses inside one operation, set for a while and always put back.

Small matrices (a toy model, a small SAE, one decoding step) run faster on one thread on a shared CPU: a second
thread only adds synchronisation. Every saelab function that picks a thread count sets it through here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch


def set_torch_threads(threads: int | None) -> Callable[[], None]:
    """Use ``threads`` intra-op threads from now on (None: leave torch's setting); return what restores it.

    For code that cannot wrap its work in ``with torch_threads(...)``: call the returned function in a
    ``finally``.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    return lambda: torch.set_num_threads(before)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Temporarily use ``threads`` intra-op threads (None: leave torch's setting), restored on every exit."""
    restore = set_torch_threads(threads)
    try:
        yield
    finally:
        restore()
