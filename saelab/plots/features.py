"""Figures and HTML for feature dashboards: highlighted text, activation histograms, logit-effect tables."""

from __future__ import annotations

import html

import plotly.graph_objects as go

from saelab.feature_store import FeatureStore
from saelab.features import Context


def highlighted_tokens_html(tokens: list[str], activations: list[float], scale: float, peak: int | None = None) -> str:
    """Tokens as inline spans, shaded orange by activation / ``scale``; hovering shows the value."""
    spans = []
    for i, (token, value) in enumerate(zip(tokens, activations)):
        strength = max(0.0, min(1.0, value / scale)) if scale > 0 else 0.0
        border = "border-bottom:2px solid #d62728;" if i == peak else ""
        text = html.escape(token).replace("\n", "⏎")
        spans.append(f'<span title="{value:.2f}" style="background:rgba(255,127,14,{strength:.2f});'
                     f'{border}white-space:pre">{text}</span>')
    return "".join(spans)


def contexts_html(contexts: list[Context], scale: float) -> str:
    if not contexts:
        return "<i>this feature never fired on the corpus</i>"
    rows = [f'<div style="font-family:monospace;margin:2px 0"><b>{c.value:6.2f}</b>&nbsp; '
            f"{highlighted_tokens_html(c.tokens, c.activations, scale, c.peak)}</div>" for c in contexts]
    return "".join(rows)


def logit_effects_html(up: list[tuple[str, float]], down: list[tuple[str, float]]) -> str:
    def column(title: str, pairs: list[tuple[str, float]], colour: str) -> str:
        cells = "".join(f"<tr><td style='font-family:monospace'>{html.escape(repr(t))}</td>"
                        f"<td style='color:{colour}'>{v:+.2f}</td></tr>" for t, v in pairs)
        return f"<table style='display:inline-block;vertical-align:top;margin-right:24px'><tr><th>{title}</th><th></th></tr>{cells}</table>"

    return column("promotes", up, "#2ca02c") + column("suppresses", down, "#d62728")


def histogram_title(feature: int) -> str:
    return f"feature {feature}: activation histogram"


def activation_histogram(store: FeatureStore, feature: int) -> go.Figure:
    """How often the feature fires at each strength (log-spaced bins; zeros are not shown)."""
    edges = store.bin_edges
    centres = (10 ** ((edges[:-1] + edges[1:]) / 2)).tolist()
    counts = store.histogram[feature].tolist()
    fig = go.Figure(go.Bar(x=centres, y=counts, marker_color="#ff7f0e",
                           hovertemplate="activation ≈ %{x:.3g}: %{y} tokens<extra></extra>"))
    fig.update_xaxes(type="log", title="activation (when non-zero)")
    fig.update_yaxes(title="tokens")
    fig.update_layout(title=histogram_title(feature), height=260, width=480,
                      margin={"l": 50, "r": 10, "t": 40, "b": 40})
    return fig
