"""Figures for a real language model's activations: residual norms across layers, top tokens of a neuron,
and the norm distribution of a harvest (where the outliers are)."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

SINK_COLOUR, TOKEN_COLOUR, LAYER_COLOUR = "#d62728", "#1f77b4", "#ff7f0e"


def residual_norms_figure(norms_LP: Float[Tensor, "layer pos"], token_labels: Sequence[str],
                          layer: int) -> go.Figure:
    """Left: the residual norm of every token across layers (log scale; position 0 in red).
    Right: each token's norm at ``layer``."""
    n_rows, n_pos = norms_LP.shape
    if not 0 <= layer < n_rows:
        raise ValueError(f"layer must be in 0..{n_rows - 1}, got {layer}")
    if len(token_labels) != n_pos:
        raise ValueError(f"token_labels has {len(token_labels)} labels for {n_pos} positions")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.1,
                        subplot_titles=["residual norm across layers", f"per token after {layer} blocks"])
    layers = list(range(n_rows))
    for pos in range(n_pos):
        colour = SINK_COLOUR if pos == 0 else TOKEN_COLOUR
        fig.add_trace(go.Scatter(x=layers, y=norms_LP[:, pos].tolist(), mode="lines", name=repr(token_labels[pos]),
                                 line=dict(color=colour, width=2 if pos == 0 else 1), opacity=1 if pos == 0 else 0.5,
                                 showlegend=False, hovertemplate=f"{token_labels[pos]!r}<br>layer %{{x}}: "
                                                                 "norm %{y:.0f}<extra></extra>"), row=1, col=1)
    median = norms_LP[:, 1:].median(dim=1).values if n_pos > 1 else norms_LP[:, 0]
    fig.add_trace(go.Scatter(x=layers, y=median.tolist(), mode="lines", name="median (position ≥ 1)",
                             line=dict(color="black", width=3), showlegend=False), row=1, col=1)
    top = float(norms_LP.max()) * 1.5
    fig.add_trace(go.Scatter(x=[layer, layer], y=[1, top], mode="lines", line=dict(color=LAYER_COLOUR, dash="dash"),
                             showlegend=False, hoverinfo="skip"), row=1, col=1)
    labels = [f"{pos}:{label!r}" for pos, label in enumerate(token_labels)]
    fig.add_trace(go.Bar(x=labels, y=norms_LP[layer].tolist(), showlegend=False,
                         marker_color=[SINK_COLOUR] + [TOKEN_COLOUR] * (n_pos - 1),
                         hovertemplate="%{x}: norm %{y:.0f}<extra></extra>"), row=1, col=2)
    fig.update_yaxes(type="log", title_text="‖residual‖ (log)", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="layer (blocks applied)", row=1, col=1)
    fig.update_layout(height=420, width=950, margin=dict(l=50, r=20, t=40, b=80))
    return fig


def neuron_top_tokens_figure(contexts: Sequence[str], activations: Sequence[float], title: str) -> go.Figure:
    """Horizontal bars: the contexts (token in [brackets]) where one neuron fires most, strongest on top."""
    fig = go.Figure(go.Bar(x=list(activations)[::-1], y=[f"{i}. {c}" for i, c in enumerate(contexts)][::-1],
                           orientation="h", marker_color=TOKEN_COLOUR,
                           hovertemplate="%{y}<br>activation %{x:.2f}<extra></extra>"))
    fig.update_layout(title=title, height=max(300, 28 * len(contexts) + 80), width=900,
                      margin=dict(l=380, r=20, t=50, b=40), xaxis_title="activation")
    return fig


def activation_norms_histogram(acts_ND: Float[Tensor, "n_tokens d_model"], outlier_norm: float = 1000.0
                               ) -> go.Figure:
    """Histogram of a harvest's per-token norms on a log axis, with the outlier threshold marked."""
    norms = acts_ND.float().norm(dim=-1)
    n_out = int((norms > outlier_norm).sum())
    fig = go.Figure(go.Histogram(x=torch.log10(norms.clamp_min(1e-3)).tolist(), nbinsx=80,
                                 marker_color=TOKEN_COLOUR, hovertemplate="log10 norm %{x}<br>%{y} tokens"))
    fig.add_vline(x=torch.log10(torch.tensor(outlier_norm)).item(), line=dict(color=SINK_COLOUR, dash="dash"),
                  annotation_text=f"{outlier_norm:g}: {n_out} of {len(norms)} tokens above")
    fig.update_layout(height=320, width=800, xaxis_title="log10 ‖activation‖", yaxis_title="tokens",
                      yaxis_type="log", title=f"median norm {norms.median():.0f}")
    return fig
