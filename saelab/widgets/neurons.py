"""Pick an MLP neuron, see the corpus contexts where it fires most (are they about one thing?)."""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go
from jaxtyping import Float, Int
from torch import Tensor

from saelab import harvest
from saelab.deprecated import moved_names
from saelab.plots.lm import neuron_top_tokens_figure

# Computed in saelab.harvest now; importing them from here keeps working for one release.
__getattr__ = moved_names(__name__, {"top_contexts": "saelab.harvest.neuron_top_contexts",
                                     "TopContexts": "saelab.harvest.NeuronContexts",
                                     "most_selective_neurons": "saelab.harvest.most_selective_neurons"})


class NeuronPicker(widgets.VBox):
    """A neuron slider and a top-k slider over one layer's harvested MLP activations."""

    def __init__(self, acts_NM: Float[Tensor, "n_tokens d_mlp"], tokens: Int[Tensor, "batch pos"], tokenizer,
                 neuron: int = 0, k: int = 10, label: str = "MLP"):
        self.acts_NM, self.tokens, self.tokenizer, self.label = acts_NM, tokens, tokenizer, label
        self.neuron = widgets.IntSlider(value=neuron, min=0, max=acts_NM.shape[1] - 1, description="neuron",
                                        continuous_update=False)
        self.k = widgets.IntSlider(value=k, min=3, max=30, description="top k", continuous_update=False)
        self.figure = go.FigureWidget(neuron_top_tokens_figure([], [], ""))
        for slider in (self.neuron, self.k):
            slider.observe(lambda _change: self.redraw(), names="value")
        self.redraw()
        super().__init__([widgets.HBox([self.neuron, self.k]), self.figure])

    def current(self) -> harvest.NeuronContexts:
        return harvest.neuron_top_contexts(self.acts_NM, self.tokens, self.neuron.value, self.tokenizer,
                                           k=self.k.value)

    def redraw(self) -> None:
        top = self.current()
        fresh = neuron_top_tokens_figure(top.contexts, top.activations,
                                         f"{self.label} neuron {self.neuron.value}: its top {len(top.contexts)} tokens")
        with self.figure.batch_update():
            self.figure.data[0].x, self.figure.data[0].y = fresh.data[0].x, fresh.data[0].y
            self.figure.layout.title.text = fresh.layout.title.text
            self.figure.layout.height = fresh.layout.height


def neuron_picker(acts_NM: Float[Tensor, "n_tokens d_mlp"], tokens: Int[Tensor, "batch pos"], tokenizer,
                  neuron: int = 0, k: int = 10, label: str = "MLP") -> NeuronPicker:
    """Sliders for a neuron and how many of its top contexts to show."""
    return NeuronPicker(acts_NM, tokens, tokenizer, neuron, k, label)

