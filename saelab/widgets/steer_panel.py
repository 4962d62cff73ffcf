"""The steering panel: clamp one SAE feature and watch a baseline and a steered reply being written side by side,
each token shaded by how strongly the feature fires on it."""

from __future__ import annotations

import html
import math
from collections.abc import Collection, Sequence

import ipywidgets as widgets
import plotly.graph_objects as go

from saelab import steer, steering_search
from saelab.deprecated import moved_names
from saelab.feature_store import FeatureStore, check_store_fits
from saelab.sae import SAE
from saelab.steering_search import CLAMP_MULTIPLE_RANGE
from saelab.streaming import StreamedToken
from saelab.widgets.common import FeaturePicker, error_html

DEFAULT_PROMPT = "What is your physical form?"
REPLIES = ("baseline", "steered")
_COLOURS = {"baseline": "#7f7f7f", "steered": "#ff7f0e"}
# Computed in the library now; importing them from here keeps working for one release.
__getattr__ = moved_names(__name__, {"clamp_value": "saelab.steering_search.clamp_value",
                                     "MULTIPLE_RANGE": "saelab.steering_search.CLAMP_MULTIPLE_RANGE"})


def reply_html(title: str, steps: Sequence[StreamedToken], scale: float, *, writing: bool = False) -> str:
    """One reply as text, each token shaded by the feature's activation on it / ``scale`` (hover shows the value).

    Unlike the dashboard's snippets, a reply keeps its line breaks and wraps long lines.
    """
    spans = []
    for step in steps:
        if not step.text:  # special tokens (end of turn) add no text
            continue
        value = step.activation or 0.0
        strength = max(0.0, min(1.0, value / scale)) if scale > 0 else 0.0
        spans.append(f'<span title="{value:.3g}" style="background:rgba(255,127,14,{strength:.2f})">'
                     f"{html.escape(step.text)}</span>")
    cursor = "<span style='color:#999'>▌</span>" if writing else ""
    return (f"<div style='margin-right:8px'><b>{html.escape(title)}</b><div style='font-family:monospace;"
            f"white-space:pre-wrap;overflow-wrap:anywhere;border:1px solid #ddd;padding:6px;min-height:4em'>"
            f"{''.join(spans)}{cursor}</div></div>")


def activation_figure(feature: int, replies: dict[str, Sequence[StreamedToken]], max_activation: float) -> go.Figure:
    """The feature's activation on each generated token of both replies, as bars (hover shows the token)."""
    fig = go.Figure()
    for name in REPLIES:
        fig.add_bar(name=name, **_bars(replies.get(name, [])), marker_color=_COLOURS[name],
                    hovertemplate="token %{x} %{hovertext}: %{y:.3g}<extra>" + name + "</extra>")
    fig.add_hline(y=max_activation, line_dash="dot", line_color="#d62728",
                  annotation_text="max on corpus", annotation_position="top left")
    fig.update_layout(title=f"feature {feature} on each generated token (before the clamp)", barmode="group",
                      height=260, width=900, margin=dict(l=50, r=10, t=40, b=40), legend=dict(orientation="h"))
    fig.update_xaxes(title="generated token")
    fig.update_yaxes(title="activation")
    return fig


def _bars(steps: Sequence[StreamedToken]) -> dict:
    return dict(x=list(range(1, len(steps) + 1)), y=[s.activation or 0.0 for s in steps],
                hovertext=[repr(s.text) for s in steps])


class SteeringPanel(widgets.VBox):
    """Pick a feature (id or search), a clamp strength and a prompt; Generate streams both replies."""

    def __init__(self, model, sae: SAE, store: FeatureStore, feature: int | None = None,
                 prompt: str = DEFAULT_PROMPT, multiple: float = 1.0, max_new_tokens: int = 48,
                 temperature: float = 0.0, seed: int = 0):
        check_store_fits(model, sae, store)
        self.hook_name = store.hook_name
        if feature is None:  # the feature that fires most strongly, until the learner picks one
            feature = int(store.max_activation.argmax())
        steering_search.clamp_value(store, sae.check_feature(feature), multiple)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= 256:
            raise ValueError(f"max_new_tokens must be an integer in 1..256, got {max_new_tokens!r}")
        if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature!r}")
        self.model, self.sae, self.store = model, sae, store
        # The yardstick for push lengths: the activation's typical size at the hook, on the panel's own prompt.
        self.median_norm = steering_search.median_residual_norm(model, self.hook_name, [prompt])
        self.temperature, self.seed = temperature, seed
        self.replies: dict[str, list[StreamedToken]] = {name: [] for name in REPLIES}
        self.last_error: Exception | None = None
        self._drawn = (feature, multiple)  # the feature and multiple the replies on show were written with
        self._baseline_settings = None  # prompt, length, sampling and feature of the complete baseline on show

        self.picker = FeaturePicker(sae.cfg.d_sae, feature)
        self.feature, self.query, self.results = self.picker.feature, self.picker.query, self.picker.results
        self.search_button = self.picker.search_button
        low, high = CLAMP_MULTIPLE_RANGE
        self.multiple = widgets.FloatSlider(value=multiple, min=low, max=high, step=0.25,
                                            description="clamp × max", continuous_update=False,
                                            layout={"width": "520px"}, style={"description_width": "initial"})
        self.feature_info = widgets.HTML()
        self.prompt = widgets.Text(value=prompt, description="prompt", layout={"width": "620px"})
        self.max_new_tokens = widgets.BoundedIntText(value=max_new_tokens, min=1, max=256, description="new tokens")
        self.generate_button = widgets.Button(description="Generate", button_style="primary")
        self.status = widgets.HTML()
        self.baseline = widgets.HTML(layout={"width": "50%"})
        self.steered = widgets.HTML(layout={"width": "50%"})
        self.chart = go.FigureWidget(activation_figure(feature, self.replies, float(store.max_activation[feature])))

        self.feature.observe(self._guarded(self.show_feature), names="value")
        self.multiple.observe(self._guarded(self.show_feature), names="value")
        self.picker.on_search(self._guarded(self.search))
        self.generate_button.on_click(self._guarded(self.generate))
        self.show_feature()
        self._draw_replies(writing=set())
        super().__init__([
            self.picker.row, self.results,
            self.multiple, self.feature_info, widgets.HBox([self.prompt, self.max_new_tokens]),
            widgets.HBox([self.generate_button, self.status]), widgets.HBox([self.baseline, self.steered]),
            self.chart,
        ])

    def _guarded(self, action):
        """A callback that shows its error in the panel (a widget callback's exception is otherwise lost)."""
        def callback(*_args):
            if self.last_error is not None:  # the learner acted again: the old message no longer applies
                self.last_error, self.status.value = None, ""
            try:
                action()
            except Exception as error:  # noqa: BLE001 - shown to the learner, kept in last_error
                self.last_error = error
                self.status.value = error_html(error)
        return callback

    def show_feature(self) -> None:
        f = self.feature.value
        top, density = float(self.store.max_activation[f]), float(self.store.density[f])
        info = (f"<b>feature {f}</b> · max activation {top:.3g} · fires on {density:.3%} of "
                f"{self.store.n_tokens:,} tokens")
        if top > 0:
            value = steering_search.clamp_value(self.store, f, self.multiple.value)
            effect = "ablates it (clamps to 0)" if value == 0 else f"clamps it to {value:.3g}"
            info += (f" · {self.multiple.value:g} × max {effect} at every position, error term kept: a push of "
                     f"{self.push_fraction(f, self.multiple.value):.2f} × the median residual norm "
                     f"({self.median_norm:.3g}) where it was silent")
        else:
            info += " · <span style='color:#d62728'>never fired: pick another feature</span>"
        self.feature_info.value = info
        self.steered.value = reply_html(self.steered_title(), self.replies["steered"],
                                        float(self.store.max_activation[self._drawn[0]]))

    def search(self) -> None:
        self.status.value = self.picker.search(self.model, self.sae, self.store)

    def generate(self) -> None:
        """Stream the baseline and the steered reply, redrawing after every token."""
        f = self.feature.value
        value = steering_search.clamp_value(self.store, f, self.multiple.value)
        # The baseline does not depend on the clamp: after a slider move only the steered reply is rewritten.
        settings = (self.prompt.value, self.max_new_tokens.value, self.temperature, self.seed, f)
        fresh_baseline = settings != self._baseline_settings
        stream = steer.stream_replies(self.model, self.prompt.value, sae=self.sae, clamps={f: value},
                                      hook_name=self.hook_name, feature=f,
                                      max_new_tokens=self.max_new_tokens.value, temperature=self.temperature,
                                      seed=self.seed, baseline=fresh_baseline)
        self._baseline_settings = None  # until this baseline is complete
        self.replies = {"baseline": [] if fresh_baseline else self.replies["baseline"], "steered": []}
        self._drawn = (f, self.multiple.value)
        self.generate_button.disabled = True
        writing = set(REPLIES) if fresh_baseline else {"steered"}
        try:
            self._draw_replies(writing)
            for which, token in stream:
                self.replies[which].append(token)
                self._draw_replies(writing, only=which)
                self.status.value = ("<i>writing… " + " · ".join(f"{name} {len(self.replies[name])}"
                                                                 for name in REPLIES) + " tokens</i>")
            self._baseline_settings = settings
            self.status.value = (f"done: feature {f} clamped to {value:.3g} ({self.multiple.value:g} × max, a push of "
                                 f"{self.push_fraction(f, self.multiple.value):.2f} × the median residual norm)")
        finally:
            self.generate_button.disabled = False
            self._draw_replies(writing=set())

    def steered_title(self) -> str:
        """The steered reply's heading: the setting the slider shows now, in both units, and whether the reply on
        show was written with another one (then Generate rewrites it)."""
        f, multiple = self.feature.value, self.multiple.value
        title = f"steered: feature {f} clamped at {multiple:g} × max"
        if float(self.store.max_activation[f]) > 0:
            title += f" (push {self.push_fraction(f, multiple):.2f} × the median residual norm)"
        if self.replies["steered"] and self._drawn != (f, multiple):
            drawn_f, drawn_multiple = self._drawn
            written = f"{drawn_multiple:g} × max" + ("" if drawn_f == f else f" of feature {drawn_f}")
            title += f" · the reply below was written at {written}: press Generate"
        return title

    def push_fraction(self, feature: int, multiple: float) -> float:
        """How far the clamp pushes the residual stream where the feature was silent, per median residual norm."""
        # clamp_value refuses a multiple out of range and a feature that never fired.
        steering_search.clamp_value(self.store, feature, multiple)
        return steering_search.strength_for_multiple(self.sae, feature, multiple, self.median_norm,
                                                     float(self.store.max_activation[feature])).push_fraction

    def _draw_replies(self, writing: Collection[str], only: str | None = None) -> None:
        """Redraw the replies (``only`` one of them), with a cursor on those still being ``writing``."""
        f = self._drawn[0]
        scale = float(self.store.max_activation[f])
        titles = {"baseline": "baseline", "steered": self.steered_title()}
        with self.chart.batch_update():
            for i, name in enumerate(REPLIES):
                if only in (None, name):
                    getattr(self, name).value = reply_html(titles[name], self.replies[name], scale, writing=name in writing)
                    self.chart.data[i].update(_bars(self.replies[name]))
            if only is None:
                fresh = activation_figure(f, {}, scale)
                self.chart.layout.title.text = fresh.layout.title.text
                self.chart.layout.shapes, self.chart.layout.annotations = fresh.layout.shapes, fresh.layout.annotations

def steering_panel(model, sae: SAE, store: FeatureStore, feature: int | None = None, prompt: str = DEFAULT_PROMPT,
                   multiple: float = 1.0, max_new_tokens: int = 48, temperature: float = 0.0,
                   seed: int = 0) -> SteeringPanel:
    """Clamp ``feature`` of ``sae`` at ``multiple`` × its max activation (from ``store``) and compare replies.

    ``feature=None`` starts at the feature with the largest activation on the corpus; search by text to find
    another. On SmolLM2-135M, coherent steering sits near 0.75-2 × max; far above, replies collapse into
    repeated tokens.
    """
    return SteeringPanel(model, sae, store, feature, prompt, multiple, max_new_tokens, temperature, seed)
