"""Pieces more than one widget shows: an error as one red line, and the feature picker (an id box plus a text
search whose results set it)."""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as widgets

from saelab import features

SEARCH_HINT = "<i>type some text to search for, e.g. <q>the Golden Gate Bridge</q></i>"
NOTHING_FOUND = "<i>no feature fired on this text</i>"


def error_html(error: Exception) -> str:
    """An exception as one red line for the learner: its type and the first line of its message."""
    message = str(error).splitlines()[0] if str(error) else ""
    return f"<span style='color:#d62728'><b>{type(error).__name__}</b>: {html.escape(message, quote=False)}</span>"


class FeaturePicker:
    """The feature id box and the text search that sets it, as the dashboard and the steering panel show them.

    ``row`` holds the id box, the query box and the Search button; ``results`` (shown below it) lists the
    features that fire most on the searched text, and picking one sets ``feature``.
    """

    def __init__(self, d_sae: int, feature: int):
        self.feature = widgets.BoundedIntText(value=feature, min=0, max=d_sae - 1, description="feature")
        self.query = widgets.Text(placeholder="find features firing on this text", layout={"width": "340px"},
                                  continuous_update=False)  # Enter (or leaving the box) searches
        self.search_button = widgets.Button(description="Search")
        self.results = widgets.Dropdown(options=[], description="results", layout={"width": "340px"})
        self.row = widgets.HBox([self.feature, self.query, self.search_button])
        self.results.observe(self._pick, names="value")

    def on_search(self, search: Callable[[], None]) -> None:
        """Call ``search()`` when Search is pressed or a query is entered."""
        self.search_button.on_click(lambda _button: search())
        self.query.observe(lambda _change: search(), names="value")

    def search(self, model, sae, store, k: int = 10) -> str:
        """List the ``k`` features that fire most on the query in ``results``; return what to tell the learner
        (empty when there are results). A query the model cannot read raises, and leaves ``results`` empty."""
        self.results.options = []
        if not self.query.value.strip():
            return SEARCH_HINT
        found = features.search_features(model, sae, store, self.query.value, k=k)
        self.results.options = [(f"feature {f}: {score:.0%} of its max", f) for f, score in found]
        return "" if found else NOTHING_FOUND

    def _pick(self, change) -> None:
        if change["new"] is not None:
            self.feature.value = change["new"]
