"""Interactive explorers for the lessons: each module wires ipywidgets sliders to a pure function and redraws.

Widgets are imported on first use, so ``import saelab.widgets`` stays cheap and a widget's heavy
dependencies (a language model, say) load only when that widget is asked for.
"""

from importlib import import_module

_WHERE = {
    "superposition_explorer": "saelab.widgets.superposition",
    "sparsity_sweep_viewer": "saelab.widgets.sweep_viewer",
    "sae_tradeoff_explorer": "saelab.widgets.sae_tradeoff",
    "residual_norms_explorer": "saelab.widgets.residual_norms",
    "neuron_picker": "saelab.widgets.neurons",
    "feature_dashboard": "saelab.widgets.dashboard",
    "reconstruction_explorer": "saelab.widgets.reconstruction",
    "steering_panel": "saelab.widgets.steer_panel",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'saelab.widgets' has no attribute {name!r}")


def __dir__():
    return sorted(_WHERE)
