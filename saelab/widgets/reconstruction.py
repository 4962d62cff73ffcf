"""Token by token: how well do one or more SAEs rebuild a text's activations, and with which latents?

``saelab.reconstruction.reconstruct_text`` runs a text to the SAEs' hook point and encodes every token with
each SAE; this widget picks a text and a token and redraws:

    top:          each token's own FVU, ||x - x_hat||^2 / ||x - centre||^2, one bar per SAE
    bottom left:  the chosen token's activation x against each reconstruction x_hat, one dot per dimension
    bottom right: the chosen token's strongest latents in each SAE

Shape letters: P positions (BOS dropped), D d_model, F d_sae.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from saelab import reconstruction as text_reconstruction
from saelab.deprecated import moved_names
from saelab.sae import SAE

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
# Computed in saelab.reconstruction now; importing them from here keeps working for one release.
__getattr__ = moved_names(__name__, {name: f"saelab.reconstruction.{name}"
                                     for name in ("reconstruct_text", "TextReconstruction", "N_TOP_LATENTS")})


def reconstruction_figure(result: text_reconstruction.TextReconstruction, position: int) -> go.Figure:
    """The three panels described in the module docstring, for the token at ``position``."""
    n_pos = len(result.tokens)
    if not 0 <= position < n_pos:
        raise ValueError(f"position must be in 0..{n_pos - 1}, got {position}")
    fig = make_subplots(rows=2, cols=2, row_heights=[0.45, 0.55], vertical_spacing=0.2, horizontal_spacing=0.12,
                        specs=[[{"colspan": 2}, None], [{}, {}]],
                        subplot_titles=["each token's FVU (lower is better)",
                                        f"token {position} {result.tokens[position]!r}: x against x̂",
                                        f"token {position}: strongest latents"])
    labels = [f"{i}:{token!r}" for i, token in enumerate(result.tokens)]
    x_D = result.activations[position]
    for index, (name, fvu_P) in enumerate(result.token_fvu.items()):
        colour = COLOURS[index % len(COLOURS)]
        fig.add_trace(go.Bar(x=labels, y=fvu_P.tolist(), name=name, marker_color=colour, legendgroup=name,
                             marker_opacity=[1.0 if i == position else 0.35 for i in range(n_pos)],
                             hovertemplate="%{x}: FVU %{y:.3f}<extra>" + name + "</extra>"), row=1, col=1)
    for index, name in enumerate(result.reconstructions):
        colour = COLOURS[index % len(COLOURS)]
        fig.add_trace(go.Scatter(x=x_D.tolist(), y=result.reconstructions[name][position].tolist(),
                                   mode="markers", name=name, legendgroup=name, showlegend=False,
                                   marker=dict(color=colour, size=4, opacity=0.6),
                                   hovertemplate="x %{x:.1f} → x̂ %{y:.1f}<extra>" + name + "</extra>"),
                      row=2, col=1)
    low, high = float(x_D.min()), float(x_D.max())
    fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", showlegend=False, hoverinfo="skip",
                             line=dict(color="grey", dash="dot")), row=2, col=1)
    for index, name in enumerate(result.codes):
        colour = COLOURS[index % len(COLOURS)]
        ids, values = result.top_latents(name, position)
        fig.add_trace(go.Bar(x=values[::-1], y=[f"{name} #{i}" for i in ids][::-1], orientation="h",
                             marker_color=colour, legendgroup=name, showlegend=False,
                             hovertemplate="%{y}: %{x:.2f}<extra></extra>"), row=2, col=2)
    fig.add_vrect(x0=position - 0.5, x1=position + 0.5, fillcolor="#d62728", opacity=0.12, line_width=0,
                  row=1, col=1)
    fig.update_xaxes(title_text="x (real activation)", row=2, col=1)
    fig.update_yaxes(title_text="x̂ (reconstruction)", row=2, col=1)
    fig.update_xaxes(title_text="latent activation", row=2, col=2)
    fig.update_xaxes(tickangle=-60, row=1, col=1)
    fig.update_layout(height=620, width=980, barmode="group", margin=dict(l=60, r=20, t=50, b=40),
                      legend=dict(orientation="h", x=0, y=1.08))
    return fig


class ReconstructionExplorer(widgets.VBox):
    """A token slider and a text picker (or your own text) over ``saelab.reconstruction.reconstruct_text``."""

    def __init__(self, model, saes: Mapping[str, SAE], hook_name: str, texts: Sequence[str],
                 centre: Float[Tensor, " d_model"], position: int = 0):
        if not texts:
            raise ValueError("texts is empty: give at least one text to explore")
        self.model, self.saes, self.hook_name, self.centre = model, dict(saes), hook_name, centre
        self.result = text_reconstruction.reconstruct_text(model, self.saes, hook_name, texts[0], centre)
        if not 0 <= position < len(self.result.tokens):
            raise ValueError(f"position must be in 0..{len(self.result.tokens) - 1}, got {position}")
        # The token slider comes first: it is the one to move.
        self.position = widgets.IntSlider(value=position, min=0, max=len(self.result.tokens) - 1,
                                          description="token", continuous_update=False)
        self.text = widgets.Dropdown(options=[(t if len(t) < 70 else t[:67] + "…", t) for t in texts],
                                     value=texts[0], description="text", layout=widgets.Layout(width="640px"))
        self.own_text = widgets.Text(placeholder="or type your own text and press Enter", description="your text",
                                     layout=widgets.Layout(width="640px"))
        self.figure = go.FigureWidget(reconstruction_figure(self.result, position))
        self.status = widgets.HTML()
        self.position.observe(lambda _change: self.redraw(), names="value")
        self.text.observe(lambda change: self.show_text(change["new"]), names="value")
        self.own_text.continuous_update = False
        self.own_text.observe(lambda change: change["new"].strip() and self.show_text(change["new"]), names="value")
        self.redraw()
        super().__init__([self.position, self.text, self.own_text, self.figure, self.status])

    def show_text(self, text: str) -> None:
        self.result = text_reconstruction.reconstruct_text(self.model, self.saes, self.hook_name, text, self.centre)
        last = len(self.result.tokens) - 1
        if self.position.value > last:
            self.position.max = last  # clamps the value and redraws through the observer
            return
        self.position.max = last
        self.redraw()

    def redraw(self) -> None:
        position = min(self.position.value, len(self.result.tokens) - 1)
        fresh = reconstruction_figure(self.result, position)
        with self.figure.batch_update():
            for old, new in zip(self.figure.data, fresh.data):
                old.update({key: value for key, value in new.to_plotly_json().items()
                            if key not in ("type", "xaxis", "yaxis")})
            self.figure.layout.shapes = fresh.layout.shapes
            for old, new in zip(self.figure.layout.annotations, fresh.layout.annotations):
                old.text = new.text
        x_D = self.result.activations[position]
        parts = []
        for name, recon in self.result.reconstructions.items():
            cosine = torch.nn.functional.cosine_similarity(x_D, recon[position], dim=0)
            l0 = int((self.result.codes[name][position] > 0).sum())
            parts.append(f"<b>{name}</b>: FVU {self.result.token_fvu[name][position]:.3f}, "
                         f"cos(x, x̂) {cosine:.3f}, {l0} latents")
        self.status.value = (f"token {position} <b>{self.result.tokens[position]!r}</b> (‖x‖ = {x_D.norm():.0f}) "
                             "— " + "; ".join(parts))


def reconstruction_explorer(model, saes: Mapping[str, SAE], hook_name: str, texts: Sequence[str],
                            centre: Float[Tensor, " d_model"], position: int = 0) -> ReconstructionExplorer:
    """Explore, token by token, how each SAE in ``saes`` ({name: SAE}) rebuilds ``texts`` at ``hook_name``;
    ``centre`` is a corpus's mean activation (each token's FVU is measured around it)."""
    return ReconstructionExplorer(model, saes, hook_name, texts, centre, position)
