"""Figures for toy models of superposition: feature directions, Wᵀ W heatmaps, dimensionality, phase diagrams."""

from __future__ import annotations

import math
from typing import Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from saelab import geometry
from saelab.toy import ToyModel

# One fixed colour per feature index, so "the blue feature" means the same thing in every plot of a lesson.
FEATURE_COLOURS = ["#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                   "#bcbd22", "#7f7f7f"]
FEATURE_COLOUR_NAMES = ["blue", "green", "red", "orange", "purple", "brown", "pink", "cyan", "olive", "grey"]
PHASE_COLOURS = {"not represented": "#4c72b0", "dedicated": "#c44e52", "superposed": "#eeeeee"}


def feature_colour(feature: int) -> str:
    return FEATURE_COLOURS[feature % len(FEATURE_COLOURS)]


def _instances(W: Tensor, instances: Sequence[int] | None) -> list[int]:
    return list(range(W.shape[0])) if instances is None else list(instances)


def direction_traces(W_hidden_feat: Tensor) -> list[go.Scatter]:
    """One arrow-like line per feature from the origin to its 2D direction W[:, f]."""
    traces = []
    for f in range(W_hidden_feat.shape[1]):
        x, y = W_hidden_feat[0, f].item(), W_hidden_feat[1, f].item()
        traces.append(go.Scatter(
            x=[0, x], y=[0, y], mode="lines+markers", name=f"feature {f}",
            line=dict(color=feature_colour(f), width=3), marker=dict(size=[0, 10], color=feature_colour(f)),
            hovertemplate=f"feature {f}<br>norm {math.hypot(x, y):.2f}<extra></extra>",
            showlegend=False,
        ))
    return traces


def feature_directions(
    model_or_W: ToyModel | Tensor,
    instances: Sequence[int] | None = None,
    losses: Tensor | None = None,
    columns: int = 4,
    title: str = "Feature directions in the 2D hidden space",
) -> go.Figure:
    """Each instance's columns W[:, f] drawn as arrows in the plane (the paper's pentagon picture).

    Needs ``d_hidden == 2``. ``losses`` (one per instance) go into the subplot titles.
    """
    W = geometry.as_weight_tensor(model_or_W)
    if W.shape[1] != 2:
        raise ValueError(f"feature_directions draws 2D hidden spaces; this model has d_hidden={W.shape[1]}")
    chosen = _instances(W, instances)
    rows = math.ceil(len(chosen) / columns)
    titles = [f"instance {i}" + (f" · loss {losses[i].item():.2e}" if losses is not None else "") for i in chosen]
    fig = make_subplots(rows=rows, cols=min(columns, len(chosen)), subplot_titles=titles,
                        horizontal_spacing=0.04, vertical_spacing=0.1)
    for k, i in enumerate(chosen):
        for trace in direction_traces(W[i]):
            fig.add_trace(trace, row=k // columns + 1, col=k % columns + 1)
    limit = max(1.2, W[chosen].norm(dim=1).max().item() * 1.1)
    fig.update_xaxes(range=[-limit, limit], zeroline=True, showticklabels=False)
    fig.update_yaxes(range=[-limit, limit], zeroline=True, showticklabels=False)
    for k in range(len(chosen)):  # square panels, so 72 degrees look like 72 degrees
        fig.update_yaxes(scaleanchor=f"x{k + 1 if k else ''}", row=k // columns + 1, col=k % columns + 1)
    fig.update_layout(title=title, height=260 * rows + 60, width=min(columns, len(chosen)) * 250 + 60,
                      margin=dict(l=20, r=20, t=70, b=20), plot_bgcolor="white")
    return fig


def superposition_heatmaps(
    model_or_W: ToyModel | Tensor,
    instances: Sequence[int] | None = None,
    titles: Sequence[str] | None = None,
) -> go.Figure:
    """Per instance: the Wᵀ W matrix, and each feature's norm as a bar coloured by its interference.

    A diagonal heatmap with unit bars is "one feature per dimension"; off-diagonal colour and coloured bars are
    features sharing dimensions (superposition).
    """
    W = geometry.as_weight_tensor(model_or_W)
    chosen = _instances(W, instances)
    overlaps = geometry.overlaps(W)
    norms, shared = geometry.feature_norms(W), geometry.interference(W)
    titles = list(titles) if titles is not None else [f"instance {i}" for i in chosen]
    fig = make_subplots(rows=2, cols=len(chosen), row_heights=[0.45, 0.55], vertical_spacing=0.08,
                        subplot_titles=titles + [""] * len(chosen))
    n = W.shape[2]
    for k, i in enumerate(chosen):
        fig.add_trace(go.Heatmap(z=overlaps[i].flip(0).tolist(), zmin=-1, zmax=1, colorscale="RdBu",
                                 showscale=k == 0, colorbar=dict(title="WᵀW", len=0.4, y=0.8),
                                 hovertemplate="row %{y}, col %{x}: %{z:.2f}<extra></extra>"),
                      row=1, col=k + 1)
        fig.add_trace(go.Bar(x=norms[i].tolist(), y=list(range(n)), orientation="h",
                             marker=dict(color=shared[i].clamp(0, 1).tolist(), colorscale="Viridis", cmin=0, cmax=1,
                                         showscale=k == 0,
                                         colorbar=dict(title="superposition", len=0.5, y=0.28)),
                             hovertemplate="feature %{y}: norm %{x:.2f}<extra></extra>", showlegend=False),
                      row=2, col=k + 1)
        fig.update_yaxes(autorange="reversed", row=2, col=k + 1, title="feature" if k == 0 else None)
        fig.update_xaxes(range=[0, max(1.2, norms.max().item())], row=2, col=k + 1, title="‖W_f‖")
        # Square cells that fill the panel: constrain to the domain instead of padding the axis range.
        fig.update_xaxes(showticklabels=False, showgrid=False, constrain="domain", row=1, col=k + 1)
        fig.update_yaxes(showticklabels=False, showgrid=False, constrain="domain",
                         scaleanchor=f"x{k + 1 if k else ''}", row=1, col=k + 1)
    fig.update_layout(height=620, width=max(420, 230 * len(chosen)), margin=dict(l=40, r=40, t=60, b=40),
                      title="Superposition: WᵀW (top) and feature norms coloured by interference (bottom)")
    return fig


def dimensionality_plot(model_or_W: ToyModel | Tensor, feature_probabilities: Sequence[float]) -> go.Figure:
    """Dimensions per feature against 1/(1-S) = 1/feature_probability, with every feature's own D_f as a dot.

    The paper's "sticky" fractions (1, 3/4, 2/3, 1/2, 2/5, 3/8) are drawn as dashed lines.
    """
    W = geometry.as_weight_tensor(model_or_W)
    if len(feature_probabilities) != W.shape[0]:
        raise ValueError(f"feature_probabilities has {len(feature_probabilities)} values; the model has "
                         f"{W.shape[0]} instances (one value per instance is needed)")
    x = [1 / p for p in feature_probabilities]
    per_model = geometry.dimensions_per_feature(W)
    per_feature = geometry.dimensionality(W)
    norms = geometry.feature_norms(W)
    fig = go.Figure()
    for value, shape in geometry.STICKY_FRACTIONS.items():
        if value > 0:
            fig.add_hline(y=value, line=dict(dash="dash", color="lightgrey"),
                          annotation_text=f"{shape} ({value:.3g})", annotation_position="right")
    xs, ys, hover = [], [], []
    for i, xi in enumerate(x):
        keep = norms[i] > 0.1  # dropped features have D ≈ 0 and would only crowd the bottom line
        xs += [xi] * int(keep.sum())
        ys += per_feature[i][keep].tolist()
        hover += [f"feature {f}" for f in torch.nonzero(keep).flatten().tolist()]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name="D_f of each feature", text=hover,
                             marker=dict(size=5, opacity=0.5, color="#1f77b4")))
    fig.add_trace(go.Scatter(x=x, y=per_model.tolist(), mode="lines+markers", name="dimensions per feature D*",
                             line=dict(color="black", width=2)))
    fig.update_xaxes(type="log", title="1 / (1 - S)  =  1 / feature probability")
    fig.update_yaxes(title="dimensionality", range=[0, 1.1])
    fig.update_layout(height=450, width=800, title="Dimensionality: features stick to simple fractions",
                      legend=dict(x=0.01, y=0.01))
    return fig


def phase_diagram_plot(diagram: geometry.PhaseDiagram) -> go.Figure:
    """A heatmap of the extra feature's fate over feature density (x) and relative importance (y)."""
    code = {phase: k for k, phase in enumerate(geometry.PHASES)}
    z = [[code[p] for p in row] for row in diagram.phase]
    colours = [PHASE_COLOURS[p] for p in geometry.PHASES]
    scale = []
    for k, colour in enumerate(colours):
        scale += [(k / len(colours), colour), ((k + 1) / len(colours), colour)]
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"{d:g}" for d in diagram.feature_density], y=[f"{r:g}" for r in diagram.relative_importance],
        zmin=-0.5, zmax=len(colours) - 0.5, colorscale=scale, text=diagram.phase,
        customdata=diagram.norm.tolist(),
        hovertemplate="density %{x}, importance %{y}<br>%{text}<br>norm %{customdata:.2f}<extra></extra>",
        colorbar=dict(tickvals=list(range(len(colours))), ticktext=list(geometry.PHASES)),
    ))
    fig.update_xaxes(title="feature density (1 - S)", type="category", autorange="reversed")
    fig.update_yaxes(title="relative importance of the extra feature", type="category")
    fig.update_layout(title="Phase diagram: is the extra feature dropped, dedicated, or superposed?",
                      height=420, width=640)
    return fig


def readout_matrix(model: ToyModel, instance: int = 0, apply_relu: bool = False) -> go.Figure:
    """What each output reads when exactly one feature is on at full strength: rows = active feature.

    Off-diagonal entries are interference: with the ReLU removed (``apply_relu=False``) you see how much the
    "blue" output moves when only "green" is on.
    """
    with torch.no_grad():
        eye = torch.eye(model.n_features)
        W = model.W[instance]
        pre = eye @ (W.T @ W) + model.b_final[instance]
        values = torch.relu(pre) if apply_relu else pre
    labels = [f"{f} ({FEATURE_COLOUR_NAMES[f % len(FEATURE_COLOUR_NAMES)]})" for f in range(model.n_features)]
    fig = go.Figure(go.Heatmap(z=values.tolist(), x=labels, y=labels, colorscale="RdBu", zmid=0,
                               text=[[f"{v:.2f}" for v in row] for row in values.tolist()], texttemplate="%{text}",
                               hovertemplate="feature %{y} on → output %{x} reads %{z:.2f}<extra></extra>"))
    fig.update_xaxes(title="output read for feature")
    fig.update_yaxes(title="the one active feature", autorange="reversed")
    fig.update_layout(title="Readout " + ("after" if apply_relu else "before") + " the ReLU", height=420, width=520)
    return fig
