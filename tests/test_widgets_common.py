"""The pieces widgets share: the one-line error and the feature picker."""

import pytest

from saelab import features
from saelab.corpus import tokenize_corpus
from saelab.sae import SAE, SAEConfig
from saelab.widgets.common import NOTHING_FOUND, SEARCH_HINT, FeaturePicker, error_html

HOOK = "blocks.2.hook_resid_post"


def test_an_error_shows_its_type_and_first_line_escaped():
    shown = error_html(ValueError("tokens <b> too long\nsecond line"))
    assert "<b>ValueError</b>: tokens &lt;b&gt; too long" in shown and "second line" not in shown
    assert "d62728" in shown
    assert "<b>KeyError</b>: " in error_html(KeyError())


def test_the_picker_searches_lists_results_and_picking_one_sets_the_feature(tiny_model, tiny_texts):
    sae = SAE(SAEConfig(d_in=32, d_sae=24, architecture="topk", k=4, metadata={"hook_name": HOOK}), seed=1)
    store = features.build_feature_store(tiny_model, sae, HOOK, tokenize_corpus(tiny_model, tiny_texts, seq_len=16),
                                         n_top=4, progress=False)
    picker = FeaturePicker(sae.cfg.d_sae, 0)
    searches = []
    picker.on_search(lambda: searches.append(picker.search(tiny_model, sae, store)))
    picker.search_button.click()
    assert searches == [SEARCH_HINT] and picker.results.options == ()
    picker.query.value = "brown fox"  # entering a query searches
    expected = [f for f, _ in features.search_features(tiny_model, sae, store, "brown fox", k=10)]
    assert [value for _, value in picker.results.options] == expected and searches[-1] in ("", NOTHING_FOUND)
    picker.results.value = expected[-1]
    assert picker.feature.value == expected[-1] and picker.feature.max == 23
    with pytest.raises(ValueError):
        picker.query.value = "fox " * 200  # longer than the tiny model's context
    assert picker.results.options == ()
