"""A slider over a sparsity sweep: one model per feature probability, its Wᵀ W and feature norms redrawn."""

from __future__ import annotations

from typing import Sequence

import ipywidgets as widgets
import plotly.graph_objects as go

from saelab import geometry
from saelab.plots.toy import superposition_heatmaps
from saelab.toy import ToyModel


class SparsitySweepViewer(widgets.VBox):
    """Slide through the instances of a trained sweep (instance i trained at ``feature_probabilities[i]``)."""

    def __init__(self, model: ToyModel, feature_probabilities: Sequence[float]):
        if len(feature_probabilities) != model.n_inst:
            raise ValueError(f"feature_probabilities has {len(feature_probabilities)} values; the model has "
                             f"{model.n_inst} instances (one value per instance is needed)")
        self.model = model
        self.slider = widgets.SelectionSlider(
            options=[(f"{p:g}", i) for i, p in enumerate(feature_probabilities)], value=0,
            description="P(active)", continuous_update=False)
        self.status = widgets.HTML()
        self.figure = go.FigureWidget(superposition_heatmaps(model, instances=[0]))
        self.figure.update_layout(title=None, width=620, height=640)
        self._probabilities = list(feature_probabilities)
        self.slider.observe(lambda _change: self.redraw(), names="value")
        self.redraw()
        super().__init__([self.slider, self.figure, self.status])

    def redraw(self) -> None:
        i = self.slider.value
        W = self.model.W.detach()[i : i + 1]
        norms, shared = geometry.feature_norms(W)[0], geometry.interference(W)[0]
        heatmap, bars = self.figure.data
        with self.figure.batch_update():
            heatmap.z = geometry.overlaps(W)[0].flip(0).tolist()
            bars.x = norms.tolist()
            bars.marker.color = shared.clamp(0, 1).tolist()
            self.figure.layout.annotations[0].text = f"feature probability {self._probabilities[i]:g}"
        represented = int((norms > 0.5).sum())
        superposed = int(((norms > 0.5) & (shared > 0.1)).sum())
        self.status.value = (f"{represented} of {W.shape[2]} features represented in {W.shape[1]} dimensions; "
                             f"{superposed} of them share their direction (interference &gt; 0.1); "
                             f"dimensions per feature {geometry.dimensions_per_feature(W).item():.2f}")


def sparsity_sweep_viewer(model: ToyModel, feature_probabilities: Sequence[float]) -> SparsitySweepViewer:
    """A slider over the sweep's feature probabilities showing each instance's superposition heatmap."""
    return SparsitySweepViewer(model, feature_probabilities)
