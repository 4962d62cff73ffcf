"""Residual-stream norms across layers: a layer slider over one prompt's per-token norms."""

from __future__ import annotations

from typing import Sequence

import ipywidgets as widgets
import plotly.graph_objects as go
from jaxtyping import Float
from torch import Tensor

from saelab.plots.lm import residual_norms_figure


class ResidualNormsWidget(widgets.VBox):
    """Move the layer slider: the right panel shows each token's residual norm after that many blocks."""

    def __init__(self, norms_LP: Float[Tensor, "layer pos"], token_labels: Sequence[str], layer: int | None = None):
        self.norms_LP, self.token_labels = norms_LP, list(token_labels)
        last = norms_LP.shape[0] - 1
        self.layer = widgets.IntSlider(value=last // 2 if layer is None else layer, min=0, max=last,
                                       description="layer", continuous_update=False)
        self.figure = go.FigureWidget(residual_norms_figure(norms_LP, self.token_labels, self.layer.value))
        self.status = widgets.HTML()
        self.layer.observe(lambda _change: self.redraw(), names="value")
        self.redraw()
        super().__init__([self.layer, self.figure, self.status])

    def redraw(self) -> None:
        layer = self.layer.value
        fresh = residual_norms_figure(self.norms_LP, self.token_labels, layer)
        with self.figure.batch_update():
            self.figure.data[-2].x = fresh.data[-2].x  # the dashed marker of the chosen layer
            self.figure.data[-1].y = fresh.data[-1].y  # the per-token bars
            self.figure.layout.annotations[1].text = fresh.layout.annotations[1].text
        row = self.norms_LP[layer]
        rest = row[1:].median().item() if len(row) > 1 else float("nan")
        self.status.value = (f"after <b>{layer}</b> blocks: position 0 has norm {row[0].item():,.0f}, "
                             f"the median other token {rest:,.0f} ({row[0].item() / rest:,.0f}×)")


def residual_norms_explorer(norms_LP: Float[Tensor, "layer pos"], token_labels: Sequence[str],
                            layer: int | None = None) -> ResidualNormsWidget:
    """A layer slider over ``saelab.harvest.residual_norms`` output for one prompt (``norms[:, 0]``)."""
    return ResidualNormsWidget(norms_LP, token_labels, layer)
