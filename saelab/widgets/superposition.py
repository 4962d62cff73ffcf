"""The superposition explorer: sliders for sparsity, importance decay and feature count, redrawing 2D features."""

from __future__ import annotations

import time

import ipywidgets as widgets
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saelab import explorer, geometry
from saelab.plots.toy import FEATURE_COLOURS, feature_colour


class SuperpositionExplorer(widgets.VBox):
    """Move a slider: the best ``n_features -> 2`` toy model for that setting is fetched (or trained) and drawn.

    Left: each feature's direction in the 2D hidden space. Right: Wᵀ W, what each output reads when one
    feature is on — off-diagonal colour is interference between features sharing the plane.
    """

    def __init__(self, n_features: int = 5, feature_probability: float = 0.05, importance_decay: float = 0.9,
                 cache: explorer.SolutionCache | None = None):
        for name, value, allowed in [("n_features", n_features, explorer.GRID_N_FEATURES),
                                     ("feature_probability", feature_probability, explorer.GRID_PROBABILITIES),
                                     ("importance_decay", importance_decay, explorer.GRID_DECAYS)]:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(f'{v:g}' for v in allowed)}; got {value!r}")
        self.cache = cache if cache is not None else explorer.SolutionCache()
        max_features = max(explorer.GRID_N_FEATURES)
        self.n_features = widgets.IntSlider(value=n_features, min=min(explorer.GRID_N_FEATURES),
                                            max=max_features, description="features",
                                            continuous_update=False)
        self.feature_probability = widgets.SelectionSlider(
            options=[(f"{p:g}", p) for p in explorer.GRID_PROBABILITIES], value=feature_probability,
            description="P(active)", continuous_update=False)
        self.importance_decay = widgets.SelectionSlider(
            options=[(f"{d:g}", d) for d in sorted(explorer.GRID_DECAYS)], value=importance_decay,
            description="importance decay", style={"description_width": "initial"}, continuous_update=False)
        self.status = widgets.HTML()
        self.figure = go.FigureWidget(self._empty_figure(max_features))
        self.last_redraw_seconds = 0.0
        for slider in (self.n_features, self.feature_probability, self.importance_decay):
            slider.observe(lambda _change: self.redraw(), names="value")
        self.redraw()
        super().__init__([widgets.HBox([self.n_features, self.feature_probability, self.importance_decay]),
                          self.figure, self.status])

    @staticmethod
    def _empty_figure(max_features: int) -> go.Figure:
        fig = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], horizontal_spacing=0.12,
                            subplot_titles=["feature directions in the hidden plane", "Wᵀ W (interference)"])
        for f in range(max_features):
            fig.add_trace(go.Scatter(x=[0, 0], y=[0, 0], mode="lines+markers", name=f"feature {f}",
                                     line=dict(color=feature_colour(f), width=3),
                                     marker=dict(size=[0, 10], color=feature_colour(f))), row=1, col=1)
        fig.add_trace(go.Heatmap(z=[[0]], zmin=-1.3, zmax=1.3, colorscale="RdBu", showscale=False,
                                 hovertemplate="feature %{y} read by output %{x}: %{z:.2f}<extra></extra>"),
                      row=1, col=2)
        fig.update_xaxes(range=[-1.3, 1.3], row=1, col=1)
        fig.update_yaxes(range=[-1.3, 1.3], scaleanchor="x", row=1, col=1)
        fig.update_xaxes(constrain="domain", showgrid=False, dtick=1, title="output reading feature", row=1, col=2)
        fig.update_yaxes(autorange="reversed", constrain="domain", showgrid=False, dtick=1, scaleanchor="x2",
                         title="active feature", row=1, col=2)
        fig.update_layout(height=430, width=820, showlegend=True, margin=dict(l=30, r=30, t=40, b=30),
                          legend=dict(orientation="h", x=0, y=-0.12))
        return fig

    def redraw(self) -> None:
        start = time.perf_counter()
        n = self.n_features.value
        solution = self.cache.get(n, self.feature_probability.value, self.importance_decay.value)
        W = solution.W
        overlaps = (W.T @ W).tolist()
        norms = geometry.feature_norms(W)[0]
        with self.figure.batch_update():
            for f, trace in enumerate(self.figure.data[:-1]):
                visible = f < n
                trace.visible = visible
                if visible:
                    trace.x, trace.y = [0, W[0, f].item()], [0, W[1, f].item()]
            heatmap = self.figure.data[-1]
            heatmap.z = overlaps
            heatmap.x = heatmap.y = list(range(n))
        represented = int((norms > 0.5).sum())
        self.status.value = (
            f"<b>{n} features, 2 dimensions</b> · each feature active with probability "
            f"{self.feature_probability.value:g} · {represented} of {n} features represented "
            f"(norm &gt; 0.5) · loss {solution.loss:.2e}"
        )
        self.last_redraw_seconds = time.perf_counter() - start


def superposition_explorer(n_features: int = 5, feature_probability: float = 0.05,
                           importance_decay: float = 0.9) -> SuperpositionExplorer:
    """Sliders for feature probability (sparsity), importance decay and number of features over a live plot."""
    return SuperpositionExplorer(n_features, feature_probability, importance_decay)


__all__ = ["SuperpositionExplorer", "superposition_explorer", "FEATURE_COLOURS"]
