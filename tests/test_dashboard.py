"""The feature dashboard on the tiny model: its panels show the store's numbers and follow every control."""

import pytest

from saelab import features
from saelab.corpus import tokenize_corpus
from saelab.plots import features as feature_plots
from saelab.sae import SAE, SAEConfig
from saelab.widgets import feature_dashboard

HOOK = "blocks.2.hook_resid_post"


@pytest.fixture(scope="module")
def setup(tiny_model, tiny_texts):
    sae = SAE(SAEConfig(d_in=32, d_sae=24, architecture="relu", hook_name=HOOK), seed=1)
    tokens = tokenize_corpus(tiny_model, tiny_texts, seq_len=16)
    store = features.build_feature_store(tiny_model, sae, tokens, hook_name=HOOK, n_top=4, progress=False)
    return tiny_model, sae, store


def test_switching_features_redraws_every_panel(setup):
    model, sae, store = setup
    a, b = store.max_activation.topk(2).indices.tolist()
    dashboard = feature_dashboard(model, sae, store, feature=a)
    assert f"feature {a}</b>" in dashboard.stats.value
    dashboard.feature.value = b
    assert f"feature {b}</b>" in dashboard.stats.value
    assert list(dashboard.histogram.data[0].y) == store.histogram[b].tolist()
    assert f"{store.top_values[b, 0].item():6.2f}" in dashboard.examples.value
    up, _ = features.logit_effects(model, sae, b, k=8)
    assert feature_plots.logit_effects_html(up, []).split("</table>")[0] in dashboard.logits.value


def test_search_lists_features_and_picking_one_shows_it(setup):
    model, sae, store = setup
    dashboard = feature_dashboard(model, sae, store)
    dashboard.query.value = "brown fox"
    expected = [f for f, _ in features.search_features(model, sae, store, "brown fox", k=10)]
    assert [value for _, value in dashboard.results.options] == expected
    dashboard.results.value = expected[-1]
    assert dashboard.feature.value == expected[-1]


def test_searching_with_an_empty_box_says_what_to_type(setup):
    model, sae, store = setup
    dashboard = feature_dashboard(model, sae, store)
    dashboard.search_button.click()
    assert "type some text" in dashboard.search_message.value and dashboard.results.options == ()


def test_own_text_shows_this_features_activation_on_each_token(setup):
    model, sae, store = setup
    dashboard = feature_dashboard(model, sae, store, feature=int(store.max_activation.argmax()))
    dashboard.own_text.value = "The quick brown fox"
    acts = features.feature_activations(model, sae, model.to_tokens("The quick brown fox"), hook_name=HOOK)[0, 1:,
                                                                                               dashboard.feature.value]
    assert f"max {acts.max().item():.2f}" in dashboard.own_result.value
    assert dashboard.own_result.value.count("<span") == acts.shape[0]


def test_highlighting_escapes_html_and_scales_by_the_maximum():
    text = feature_plots.highlighted_tokens_html(["<b>", " x"], [2.0, 0.0], scale=4.0, peak=0)
    assert "&lt;b&gt;" in text and "rgba(255,127,14,0.50)" in text and "rgba(255,127,14,0.00)" in text


def test_a_dashboard_for_a_mismatched_sae_store_or_feature_is_refused(setup):
    model, sae, store = setup
    for feature in (24, -1, 2.5, "3"):
        with pytest.raises(ValueError, match=r"^feature must be an integer in 0\.\.23, got"):
            feature_dashboard(model, sae, store, feature=feature)
    with pytest.raises(ValueError, match="d_in=16"):
        feature_dashboard(model, SAE(SAEConfig(d_in=16, d_sae=8), seed=0), store)
    with pytest.raises(ValueError, match="built for an SAE with d_sae=24, but this SAE has d_sae=8"):
        feature_dashboard(model, SAE(SAEConfig(d_in=32, d_sae=8, hook_name=HOOK), seed=0), store)
    other = SAE(SAEConfig(d_in=32, d_sae=24, hook_name="blocks.15.hook_resid_post"), seed=0)
    with pytest.raises(ValueError, match="trained on 'blocks.15.hook_resid_post', not on hook_name='blocks.2"):
        feature_dashboard(model, other, store)


def test_the_feature_box_cannot_leave_the_sae(setup):
    model, sae, store = setup
    dashboard = feature_dashboard(model, sae, store)
    dashboard.feature.value = 99
    assert dashboard.feature.value == 23 and "feature 23</b>" in dashboard.stats.value


def test_text_the_model_cannot_take_shows_a_message_instead_of_failing(setup):
    model, sae, store = setup
    dashboard = feature_dashboard(model, sae, store)
    too_long = "brown fox " * 60  # more tokens than the tiny model's 64-token context
    dashboard.own_text.value = too_long
    assert "<b>ValueError</b>: text is 482 tokens long, more than the model's context n_ctx=64" in dashboard.own_result.value
    dashboard.own_text.value = "   "
    assert "type some text first" in dashboard.own_result.value
    dashboard.query.value = too_long
    assert dashboard.results.options == () and "n_ctx=64" in dashboard.search_message.value
    dashboard.query.value = "brown fox"
    assert dashboard.results.options and dashboard.search_message.value == ""


def test_switching_reads_the_stored_windows_and_keeps_recent_panels(setup, monkeypatch):
    model, sae, store = setup
    a, b = store.max_activation.topk(2).indices.tolist()
    dashboard = feature_dashboard(model, sae, store, feature=a)
    first = dashboard.examples.value, dashboard.logits.value

    def no_model_run(*args, **kwargs):
        raise AssertionError("a feature switch should not run the model")

    monkeypatch.setattr(features, "collect_activations", no_model_run)
    dashboard.feature.value = b  # top examples from the store's windows, logit effects from the weights
    assert f"feature {b}</b>" in dashboard.stats.value and dashboard.examples.value != first[0]
    monkeypatch.setattr(features, "top_contexts", no_model_run)
    dashboard.feature.value = a  # seen before: its panels are kept
    assert (dashboard.examples.value, dashboard.logits.value) == first


def test_your_own_text_follows_feature_switches_without_running_the_model_again(setup, monkeypatch):
    model, sae, store = setup
    a, b = store.max_activation.topk(2).indices.tolist()
    dashboard = feature_dashboard(model, sae, store, feature=a)
    dashboard.own_text.value = "The quick brown fox"
    acts = features.feature_activations(model, sae, model.to_tokens("The quick brown fox"), hook_name=HOOK)[0, 1:]
    monkeypatch.setattr(features, "collect_activations", lambda *args, **kwargs: 1 / 0)
    dashboard.feature.value = b
    assert f"max {acts[:, b].max().item():.2f}" in dashboard.own_result.value
    scale = max(store.max_activation[b].item(), acts[:, b].max().item())
    words = model.to_str_tokens(model.to_tokens("The quick brown fox")[0, 1:])
    assert feature_plots.highlighted_tokens_html(words, acts[:, b].tolist(), scale) in dashboard.own_result.value
