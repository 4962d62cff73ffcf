"""Figures for sparse autoencoders: recovered vs true directions, the L0-FVU frontier, training curves,
feature-density histograms."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from saelab.metrics import FeatureMatch, SAEEvaluation, cosine_matrix
from saelab.training import TrainHistory


def matched_cosines(match: FeatureMatch, title: str = "How well each true feature was found") -> go.Figure:
    """Each true feature's best cosine with a decoder row, sorted: a wall at 1.0 means all were recovered."""
    best = match.best_cosine.sort(descending=True)
    fig = go.Figure(go.Bar(
        x=list(range(len(best.values))), y=best.values.tolist(), marker_color="#1f77b4",
        customdata=list(zip(best.indices.tolist(), match.best_latent[best.indices].tolist())),
        hovertemplate="true feature %{customdata[0]} ↔ latent %{customdata[1]}: cos %{y:.3f}<extra></extra>"))
    fig.add_hline(y=0.9, line_dash="dot", line_color="grey", annotation_text="0.9")
    fig.update_layout(title=f"{title} (MMCS {match.mmcs:.3f})", xaxis_title="true features, best found first",
                      yaxis_title="best cosine with a decoder row", yaxis_range=[0, 1.02], height=350)
    return fig


def direction_overlap(W_dec: Tensor, true_features: Tensor, match: FeatureMatch, n_show: int = 40) -> go.Figure:
    """Cosine of the first ``n_show`` true features (rows) with their one-to-one matched latents (columns):
    a bright diagonal means each true direction has its own latent."""
    n = min(n_show, true_features.shape[0])
    latents = match.one_to_one_latent[:n].clamp_min(0)
    cos = cosine_matrix(W_dec[latents], true_features[:n])
    fig = go.Figure(go.Heatmap(
        z=cos.tolist(), zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
        x=[f"latent {i}" for i in latents.tolist()], y=[f"feature {i}" for i in range(n)],
        hovertemplate="%{y} vs %{x}: cos %{z:.2f}<extra></extra>"))
    fig.update_layout(title="True directions vs their matched decoder rows", height=450, width=520,
                      yaxis_autorange="reversed", xaxis_showticklabels=False, yaxis_showticklabels=False)
    return fig


def tradeoff_frontier(points: Sequence[dict], highlight: dict | None = None, *, label: str = "setting",
                      title: str = "Sparsity vs reconstruction") -> go.Figure:
    """L0 (x) against FVU (y) for a sweep; each point is a dict with ``l0``, ``fvu`` and ``label`` (and
    optionally ``mmcs``, ``architecture``). Lower-left is better; no SAE gets there for free."""
    fig = go.Figure()
    by_arch: dict[str, list[dict]] = {}
    for p in points:
        by_arch.setdefault(p.get("architecture", "sae"), []).append(p)
    for arch, pts in by_arch.items():
        pts = sorted(pts, key=lambda p: p["l0"])
        fig.add_trace(go.Scatter(
            x=[p["l0"] for p in pts], y=[p["fvu"] for p in pts], mode="lines+markers", name=arch,
            text=[str(p.get("label", "")) for p in pts],
            customdata=[p.get("mmcs", float("nan")) for p in pts],
            hovertemplate=f"{label} %{{text}}<br>L0 %{{x:.2f}}, FVU %{{y:.3f}}<br>MMCS %{{customdata:.3f}}<extra></extra>"))
    if highlight is not None:
        fig.add_trace(go.Scatter(x=[highlight["l0"]], y=[highlight["fvu"]], mode="markers", name="current",
                                 marker=dict(size=16, symbol="star", color="#d62728")))
    fig.update_layout(title=title, xaxis_title="L0 (active latents per input)",
                      yaxis_title="FVU (fraction of variance unexplained)", height=380)
    return fig


def training_curves(history: TrainHistory, title: str = "Training") -> go.Figure:
    """FVU, L0 and the dead fraction against the step."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=["FVU", "L0", "dead latents (fraction)"])
    for col, (values, colour) in enumerate([(history.fvu, "#1f77b4"), (history.l0, "#2ca02c"),
                                            (history.dead_fraction, "#d62728")], start=1):
        fig.add_trace(go.Scatter(x=history.step, y=values, mode="lines", line_color=colour, showlegend=False),
                      row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
    for step, n in history.resampled:
        for col in (1, 2, 3):
            fig.add_vline(x=step, line_dash="dot", line_color="grey", row=1, col=col)
    fig.update_layout(title=title, height=300)
    return fig


def density_histogram(evaluation: SAEEvaluation, bins: int = 40,
                      title: str = "How often each latent fires") -> go.Figure:
    """Histogram of log10 firing frequency; never-firing (dead) latents are counted separately in red."""
    edges, counts = evaluation.density_histogram(bins=bins)
    dead = int((evaluation.feature_density == 0).sum())
    centres = ((edges[:-1] + edges[1:]) / 2).tolist()
    alive_counts = counts.clone()
    alive_counts[0] -= dead  # dead latents sit in the floor bin; show them as their own bar
    fig = go.Figure(go.Bar(x=centres, y=alive_counts.tolist(), name="firing latents", marker_color="#1f77b4",
                           hovertemplate="10^%{x:.2f} of inputs: %{y} latents<extra></extra>"))
    fig.add_trace(go.Bar(x=[float(edges[0])], y=[dead], name=f"dead ({dead})", marker_color="#d62728"))
    fig.update_layout(title=title, xaxis_title="log10(fraction of inputs on which the latent fires)",
                      yaxis_title="latents", barmode="overlay", height=320)
    return fig


def summary_table(rows: Sequence[dict]) -> go.Figure:
    """A small table of evaluation numbers (one row per SAE)."""
    keys = list(rows[0])
    cells = [[f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for r in rows] for k in keys]
    return go.Figure(go.Table(header=dict(values=keys), cells=dict(values=cells)))


def sae_comparison(rows: Sequence[dict], metrics: Sequence[tuple[str, str]] = (
        ("fvu", "FVU (lower is better)"), ("ce_loss_recovered", "CE loss recovered (higher is better)"),
        ("dead_fraction", "dead latents (fraction)")), title: str = "SAEs on the same held-out tokens") -> go.Figure:
    """One panel per metric, one bar per SAE; each row is a dict with ``name`` and the metric keys."""
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[label for _, label in metrics])
    colours = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
    for col, (key, _) in enumerate(metrics, start=1):
        fig.add_trace(go.Bar(x=[r["name"] for r in rows], y=[r[key] for r in rows], showlegend=False,
                             marker_color=[colours[i % len(colours)] for i in range(len(rows))],
                             text=[f"{r[key]:.3f}" for r in rows], textposition="auto",
                             hovertemplate="%{x}: %{y:.4f}<extra></extra>"), row=1, col=col)
    fig.update_layout(title=title, height=320, width=900)
    return fig
