"""saelab: features as directions in activation space, found with sparse autoencoders.

The library behind the saelab course. Modules, in the order data flows through them:

    toy        toy models of superposition: model, data, training
    geometry   norms, interference, dimensionality, phase diagrams
    plots      plotly figures for lessons and widgets
    widgets    interactive explorers (thin wiring over the modules above)
    exercises  checkers for the lessons' exercises
"""

import os

# On a busy 2-core machine OpenMP threads that spin while waiting slow decoding several-fold.
# This must be set before torch starts its thread pool, so it happens at import, unless the user chose.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


def fast_mode() -> bool:
    """True when ``SAELAB_FAST=1``: lessons shrink their heavy steps (tests and CI run this way)."""
    return os.environ.get("SAELAB_FAST", "0").strip().lower() in {"1", "true", "yes"}
