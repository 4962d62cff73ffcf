"""The feature dashboard: pick a feature (by id or by searching text) and see what fires it and what it does."""

from __future__ import annotations

from collections import OrderedDict

import ipywidgets as widgets
import plotly.graph_objects as go
from torch import Tensor

from saelab import features
from saelab.feature_store import FeatureStore, check_store_fits
from saelab.plots import features as feature_plots
from saelab.sae import SAE
from saelab.widgets.common import FeaturePicker, error_html

# Panels of this many recently shown features are kept, so going back to one redraws without recomputing.
PANEL_CACHE_SIZE = 64


class FeatureDashboard(widgets.VBox):
    """Panels for one feature — statistics, top examples, activation histogram, logit effects — plus a search
    box (features that fire on your text) and a "try your own text" box (this feature on your text)."""

    def __init__(self, model, sae: SAE, store: FeatureStore, feature: int = 0, n_examples: int = 8):
        check_store_fits(model, sae, store)
        feature = sae.check_feature(feature)
        self.model, self.sae, self.store, self.n_examples = model, sae, store, n_examples
        self._panels: OrderedDict[int, tuple[str, str]] = OrderedDict()
        self._own_codes: tuple[str, list[str], Tensor] | None = None  # (text, its tokens, every feature's codes)
        self.picker = FeaturePicker(sae.cfg.d_sae, feature)
        self.feature, self.query, self.results = self.picker.feature, self.picker.query, self.picker.results
        self.search_button = self.picker.search_button
        self.search_message = widgets.HTML()
        self.stats = widgets.HTML()
        self.examples = widgets.HTML()
        self.logits = widgets.HTML()
        self.histogram = go.FigureWidget(feature_plots.activation_histogram(store, feature))
        self.own_text = widgets.Text(placeholder="try your own text", layout={"width": "520px"},
                                     continuous_update=False)
        self.own_button = widgets.Button(description="Show activations")
        self.own_result = widgets.HTML()

        self.feature.observe(lambda _change: self.show(), names="value")
        self.picker.on_search(self.search)
        self.own_button.on_click(lambda _button: self.try_text())
        self.own_text.observe(lambda _change: self.try_text(), names="value")
        self.show()
        super().__init__([
            self.picker.row, self.results, self.search_message,
            self.stats, widgets.HBox([self.histogram, self.logits]), widgets.HTML("<b>Top examples</b>"),
            self.examples, widgets.HBox([self.own_text, self.own_button]), self.own_result,
        ])

    def panels(self, feature: int) -> tuple[str, str]:
        """The top-examples and logit-effects HTML of ``feature`` (computed once, then kept for a while)."""
        if feature in self._panels:
            self._panels.move_to_end(feature)
            return self._panels[feature]
        contexts = features.top_contexts(self.model, self.sae, self.store, feature, n=self.n_examples)
        shown = (feature_plots.contexts_html(contexts, float(self.store.max_activation[feature])),
                 feature_plots.logit_effects_html(*features.logit_effects(self.model, self.sae, feature, k=8)))
        self._panels[feature] = shown
        if len(self._panels) > PANEL_CACHE_SIZE:
            self._panels.popitem(last=False)
        return shown

    def show(self) -> None:
        f = self.feature.value
        store = self.store
        self.stats.value = (f"<b>feature {f}</b> · fires on {store.density[f].item():.3%} of "
                            f"{store.n_tokens:,} tokens · max {store.max_activation[f].item():.2f} · mean when "
                            f"active {store.mean_when_active[f].item():.2f}")
        self.examples.value, self.logits.value = self.panels(f)
        with self.histogram.batch_update():
            self.histogram.data[0].y = store.histogram[f].tolist()
            self.histogram.layout.title.text = feature_plots.histogram_title(f)
        if self.own_text.value.strip():
            self.try_text()

    def search(self) -> None:
        try:
            self.search_message.value = self.picker.search(self.model, self.sae, self.store)
        except ValueError as error:  # e.g. a text longer than the model's context: say so, keep the widget
            self.search_message.value = error_html(error)

    def try_text(self) -> None:
        if not self.own_text.value.strip():
            self.own_result.value = "<i>type some text first</i>"
            return
        f, text = self.feature.value, self.own_text.value
        if self._own_codes is None or self._own_codes[0] != text:
            try:
                tokens = features.text_tokens(self.model, text)
            except ValueError as error:
                self.own_result.value = error_html(error)
                return
            # Every feature's codes, kept: switching features then redraws this panel without the model.
            codes = features.feature_activations(self.model, self.sae, tokens, hook_name=self.store.hook_name)[0, 1:]
            self._own_codes = (text, self.model.to_str_tokens(tokens[0, 1:]), codes)
        _, words, codes = self._own_codes
        acts = codes[:, f]
        scale = max(float(self.store.max_activation[f]), float(acts.max()))
        self.own_result.value = (f"<div style='font-family:monospace'>max {acts.max().item():.2f}: "
                                 f"{feature_plots.highlighted_tokens_html(words, acts.tolist(), scale)}</div>")


def feature_dashboard(model, sae: SAE, store: FeatureStore, feature: int = 0) -> FeatureDashboard:
    """A dashboard for ``sae``'s features on ``model``, answering from the precomputed ``store``."""
    return FeatureDashboard(model, sae, store, feature)
