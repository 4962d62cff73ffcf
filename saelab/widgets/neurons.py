"""Pick an MLP neuron, see the corpus contexts where it fires most (are they about one thing?)."""

from __future__ import annotations

from typing import NamedTuple

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from torch import Tensor

from saelab.harvest import token_index
from saelab.plots.lm import neuron_top_tokens_figure


class TopContexts(NamedTuple):
    """The ``k`` strongest activations of one neuron: where they are and what they say."""

    activations: list[float]
    flat_index: list[int]
    """``row * seq_len + pos`` of each token in the harvested token tensor."""
    contexts: list[str]
    """The text around each token, the token itself in [brackets]."""


def top_contexts(acts_NM: Float[Tensor, "n_tokens d_mlp"], tokens: Int[Tensor, "batch pos"], neuron: int,
                 tokenizer, k: int = 10, before: int = 8, after: int = 2, drop_bos: bool = True) -> TopContexts:
    """The ``k`` tokens where ``neuron`` fires most; ``acts_NM`` comes from ``collect_activations`` on ``tokens``."""
    if not 0 <= neuron < acts_NM.shape[1]:
        raise ValueError(f"neuron must be in 0..{acts_NM.shape[1] - 1}, got {neuron}")
    index = token_index(tokens, drop_bos)
    if len(index) != acts_NM.shape[0]:
        raise ValueError(f"acts_NM has {acts_NM.shape[0]} rows but tokens give {len(index)} (same drop_bos?)")
    values, where = acts_NM[:, neuron].float().topk(min(k, acts_NM.shape[0]))
    seq_len, flat = tokens.shape[1], tokens.reshape(-1)
    contexts = []
    for i in index[where].tolist():
        row_start = (i // seq_len) * seq_len
        left, right = max(row_start + int(drop_bos), i - before), min(row_start + seq_len, i + after + 1)
        text = (tokenizer.decode(flat[left:i]) + "[" + tokenizer.decode(flat[i:i + 1]) + "]"
                + tokenizer.decode(flat[i + 1:right]))
        contexts.append(text.replace("\n", "⏎"))
    return TopContexts(values.tolist(), index[where].tolist(), contexts)


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

    def current(self) -> TopContexts:
        return top_contexts(self.acts_NM, self.tokens, self.neuron.value, self.tokenizer, k=self.k.value)

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


def most_selective_neurons(acts_NM: Float[Tensor, "n_tokens d_mlp"], n: int = 5) -> list[int]:
    """Neurons whose top activation stands out most from their typical one (max / std): good ones to look at."""
    acts = acts_NM.float()
    score = acts.max(dim=0).values / acts.std(dim=0).clamp_min(1e-6)
    return torch.topk(score, min(n, acts.shape[1])).indices.tolist()
