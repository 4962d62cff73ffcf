"""The SAE trade-off explorer: sliders for sparsity (k or L1) and dictionary size; each setting trains a small
SAE on toy activations and redraws what it recovered, where it sits on the L0-FVU plane, and its dead latents."""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from saelab.deprecated import moved_names
from saelab.training import TradeoffPoint, train_tradeoff_point

K_OPTIONS = (1, 2, 3, 4, 6, 8, 12)
L1_OPTIONS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
SIZE_MULTIPLES = (0.5, 1, 2, 4)
# Computed in saelab.training now; importing it from here keeps working for one release.
__getattr__ = moved_names(__name__, {"train_point": "saelab.training.train_tradeoff_point"})


class SAETradeoffExplorer(widgets.VBox):
    """Pick an architecture, a sparsity (k or L1) and a dictionary size; the SAE for that setting is trained
    (a second or two; settings already seen come from a cache) and drawn:

    left: each true feature's best cosine with a decoder row (sorted) — a wall at 1 means all were found;
    middle: every setting tried so far on the L0-FVU plane, the current one starred;
    right: how often each latent fires (dead latents in red).
    """

    def __init__(self, activations: Tensor, true_features: Tensor, *, architecture: str = "topk",
                 sparsity: float | None = None, size_multiple: float = 2, steps: int = 300, seed: int = 0):
        if architecture not in ("topk", "relu"):
            raise ValueError(f"architecture must be 'topk' or 'relu', got {architecture!r}")
        if size_multiple not in SIZE_MULTIPLES:
            raise ValueError(f"size_multiple must be one of {SIZE_MULTIPLES}, got {size_multiple!r}")
        if true_features.ndim != 2 or true_features.shape[1] != activations.shape[1]:
            raise ValueError(f"true_features must be (n_features, d_in={activations.shape[1]}), "
                             f"got {tuple(true_features.shape)}")
        self.activations, self.true_features = activations, true_features
        self.n_true = true_features.shape[0]
        self.steps, self.seed = steps, seed
        self.cache: dict[tuple, TradeoffPoint] = {}
        options = K_OPTIONS if architecture == "topk" else L1_OPTIONS
        if sparsity is None:
            sparsity = options[2]
        if sparsity not in options:
            raise ValueError(f"sparsity must be one of {options} for {architecture}, got {sparsity!r}")
        # The sparsity slider comes first: it is the one to move.
        self.sparsity = widgets.SelectionSlider(options=self._labelled(architecture), value=sparsity,
                                                description="k" if architecture == "topk" else "L1 coef",
                                                continuous_update=False)
        self.size = widgets.SelectionSlider(
            options=[(f"{m:g}× ({int(m * self.n_true)})", m) for m in SIZE_MULTIPLES], value=size_multiple,
            description="latents", continuous_update=False)
        self.architecture = widgets.ToggleButtons(options=["topk", "relu"], value=architecture,
                                                  description="SAE")
        self.status = widgets.HTML()
        self.figure = go.FigureWidget(self._empty_figure())
        self.last_point: TradeoffPoint | None = None
        self._switching = False
        self.sparsity.observe(lambda _c: self.redraw(), names="value")
        self.size.observe(lambda _c: self.redraw(), names="value")
        self.architecture.observe(self._switch_architecture, names="value")
        self.redraw()
        super().__init__([widgets.HBox([self.sparsity, self.size]), self.architecture, self.figure, self.status])

    @staticmethod
    def _labelled(architecture: str):
        options = K_OPTIONS if architecture == "topk" else L1_OPTIONS
        return [(f"{v:g}", v) for v in options]

    def _switch_architecture(self, change) -> None:
        arch = change["new"]
        self._switching = True  # the options swap moves the value: redraw once, at the end
        try:
            self.sparsity.options = self._labelled(arch)
            self.sparsity.value = (K_OPTIONS if arch == "topk" else L1_OPTIONS)[2]
            self.sparsity.description = "k" if arch == "topk" else "L1 coef"
        finally:
            self._switching = False
        self.redraw()

    def _empty_figure(self) -> go.Figure:
        fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08, column_widths=[0.34, 0.33, 0.33],
                            subplot_titles=["true features: best cosine", "L0 vs FVU (all tried)",
                                            "latent firing frequency"])
        fig.add_trace(go.Bar(x=[], y=[], marker_color="#1f77b4", name="best cosine", showlegend=False), 1, 1)
        for arch, colour in (("topk", "#2ca02c"), ("relu", "#9467bd")):
            fig.add_trace(go.Scatter(x=[], y=[], mode="markers", name=arch, marker=dict(color=colour, size=8)), 1, 2)
        fig.add_trace(go.Scatter(x=[], y=[], mode="markers", name="current",
                                 marker=dict(symbol="star", size=16, color="#d62728")), 1, 2)
        fig.add_trace(go.Bar(x=[], y=[], marker_color="#1f77b4", name="firing", showlegend=False), 1, 3)
        fig.add_trace(go.Bar(x=[], y=[], marker_color="#d62728", name="dead", showlegend=False), 1, 3)
        fig.update_yaxes(range=[0, 1.02], row=1, col=1)
        fig.update_xaxes(title_text="true features (best first)", row=1, col=1)
        fig.update_xaxes(title_text="L0", row=1, col=2)
        fig.update_yaxes(title_text="FVU", row=1, col=2)
        fig.update_xaxes(title_text="log10 firing frequency", row=1, col=3)
        fig.update_layout(height=360, width=980, margin=dict(l=40, r=20, t=40, b=40), barmode="overlay",
                          legend=dict(x=0.45, y=1.0))
        return fig

    def current_point(self) -> TradeoffPoint:
        arch, sparsity = self.architecture.value, self.sparsity.value
        d_sae = int(self.size.value * self.n_true)
        key = (arch, sparsity, d_sae)
        if key not in self.cache:
            self.cache[key] = train_tradeoff_point(self.activations, self.true_features, arch, sparsity, d_sae,
                                                   steps=self.steps, seed=self.seed)
        return self.cache[key]

    def redraw(self) -> None:
        if self._switching:
            return
        self.status.value = "<i>training…</i>"
        point = self.current_point()
        self.last_point = point
        best = point.best_cosine.sort(descending=True).values
        log_density = point.feature_density.clamp_min(1e-6).log10()
        alive = log_density[point.feature_density > 0]
        counts = torch.histc(alive, bins=24, min=-6, max=0) if alive.numel() else torch.zeros(24)
        centres = torch.linspace(-6, 0, 25)[:-1] + 0.125
        n_dead = int((point.feature_density == 0).sum())
        with self.figure.batch_update():
            data = self.figure.data
            data[0].x, data[0].y = list(range(len(best))), best.tolist()
            for trace in data[1:3]:
                pts = [p for p in self.cache.values() if p.architecture == trace.name]
                trace.x, trace.y = [p.l0 for p in pts], [p.fvu for p in pts]
                trace.text = [f"{'k' if p.architecture == 'topk' else 'L1'}={p.sparsity:g}, {p.d_sae} latents, "
                              f"MMCS {p.mmcs:.3f}" for p in pts]
            data[3].x, data[3].y = [point.l0], [point.fvu]
            data[4].x, data[4].y = centres.tolist(), counts.tolist()
            data[5].x, data[5].y = [-6.0], [n_dead]
        self.status.value = (
            f"<b>{point.architecture}</b>, {'k' if point.architecture == 'topk' else 'L1'} = {point.sparsity:g}, "
            f"{point.d_sae} latents: L0 {point.l0:.2f}, FVU {point.fvu:.3f}, MMCS {point.mmcs:.3f}, "
            f"recovered {point.n_recovered}/{self.n_true} (cos > 0.9), dead {point.dead_fraction:.0%} "
            f"— trained in {point.seconds:.1f} s")


def sae_tradeoff_explorer(activations: Tensor, true_features: Tensor, **kwargs) -> SAETradeoffExplorer:
    """Sliders for sparsity (k or L1) and dictionary size over SAEs trained on ``activations``, scored against
    the known ``true_features`` (n_features, d_in). See ``SAETradeoffExplorer``."""
    return SAETradeoffExplorer(activations, true_features, **kwargs)
