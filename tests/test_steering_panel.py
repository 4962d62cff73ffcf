"""The steering panel on the tiny model, driven without a browser: it streams the replies steer.generate gives,
shows each token's feature activation, follows its controls, and shows errors instead of losing them."""

import dataclasses

import pytest
import torch

from saelab import features, lm, steer
from saelab.corpus import tokenize_corpus
from saelab.harvest import collect_activations
from saelab.sae import SAE, SAEConfig
from saelab.steering_search import clamp_value
from saelab.widgets import steering_panel

HOOK = "blocks.2.hook_resid_post"
PROMPT = "What is your physical form?"



@pytest.fixture(scope="module")
def setup(tiny_model, tiny_texts):
    sae = SAE(SAEConfig(d_in=32, d_sae=24, architecture="topk", k=4, hook_name=HOOK), seed=1)
    tokens = tokenize_corpus(tiny_model, tiny_texts, seq_len=16)
    store = features.build_feature_store(tiny_model, sae, tokens, hook_name=HOOK, n_top=4, progress=False)
    return tiny_model, sae, store


def test_generate_streams_steer_generates_replies_with_each_tokens_activation(setup):
    model, sae, store = setup
    feature = int(store.max_activation.argmax())
    panel = steering_panel(model, sae, store, feature=feature, multiple=10.0, max_new_tokens=8, temperature=1.0,
                           seed=2)
    drawn, progress = [], []
    panel.steered.observe(lambda change: drawn.append(change["new"]), names="value")
    panel.status.observe(lambda change: progress.append(change["new"]), names="value")
    panel.generate_button.click()

    assert panel.last_error is None and "done" in panel.status.value
    value = 10.0 * store.max_activation[feature].item()
    expected = steer.generate_replies(model, PROMPT, sae=sae, clamps={feature: value}, max_new_tokens=8,
                                      temperature=1.0, seed=2)
    texts = {name: "".join(t.text for t in panel.replies[name]).strip() for name in ("baseline", "steered")}
    assert (texts["baseline"], texts["steered"]) == expected
    assert texts["baseline"] != texts["steered"]
    # Streamed: progress after every token of either reply, the steered column redrawn as each of its tokens
    # adds text, with a writing cursor until the end.
    shown = [t for t in panel.replies["steered"] if t.text]
    steps = [f"<i>writing… baseline {(i + 1) // 2} · steered {i // 2} tokens</i>" for i in range(1, 17)]
    assert progress[:16] == steps
    assert len(drawn) >= len(shown) and "▌" in drawn[1] and "▌" not in drawn[-1]
    # Each shown token is one shaded span; the chart holds each token's activation.
    assert panel.steered.value.count("<span title=") == len(shown)
    for i, name in enumerate(("baseline", "steered")):
        assert list(panel.chart.data[i].y) == pytest.approx([t.activation for t in panel.replies[name]])
    assert any(t.activation > 0 for t in panel.replies["baseline"] + panel.replies["steered"])
    assert not panel.generate_button.disabled and not lm.active_hook_points(model)


def test_the_slider_sets_the_clamp_in_multiples_of_the_features_max(setup):
    model, sae, store = setup
    feature = int(store.max_activation.argmax())
    top = store.max_activation[feature].item()
    panel = steering_panel(model, sae, store, feature=feature, max_new_tokens=6)
    panel.multiple.value = 0.0
    assert "ablates it" in panel.feature_info.value
    panel.multiple.value = -2.5
    assert f"clamps it to {-2.5 * top:.3g}" in panel.feature_info.value
    panel.multiple.value = 20.0
    panel.generate_button.click()
    expected = steer.generate_replies(model, PROMPT, sae=sae, clamps={feature: 20.0 * top}, max_new_tokens=6)
    assert "".join(t.text for t in panel.replies["steered"]).strip() == expected.steered
    assert "20 × max" in panel.steered.value


def test_search_lists_features_and_picking_one_selects_it(setup):
    model, sae, store = setup
    panel = steering_panel(model, sae, store)
    panel.query.value = "brown fox"
    expected = [f for f, _ in features.search_features(model, sae, store, "brown fox", k=10)]
    assert [value for _, value in panel.results.options] == expected
    panel.results.value = expected[-1]
    assert panel.feature.value == expected[-1]
    assert f"feature {expected[-1]}</b>" in panel.feature_info.value


def test_errors_in_callbacks_show_in_the_panel_and_leave_no_hook(setup, monkeypatch):
    model, sae, store = setup
    panel = steering_panel(model, sae, store, max_new_tokens=8)
    panel.prompt.value = "   "
    panel.generate_button.click()
    assert "ValueError</b>: prompt must be a non-empty string" in panel.status.value
    assert isinstance(panel.last_error, ValueError)

    # The encoder breaks midway through generation: the message is shown, the hooks are gone, the button is back.
    panel.prompt.value = PROMPT
    calls, encode = [], sae.encode

    def breaks_on_the_sixth_call(x):
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("the encoder broke")
        return encode(x)

    monkeypatch.setattr(sae, "encode", breaks_on_the_sixth_call)
    panel.generate_button.click()
    assert "RuntimeError</b>: the encoder broke" in panel.status.value
    assert 0 < len(panel.replies["baseline"]) < 8 and "▌" not in panel.steered.value
    assert not lm.active_hook_points(model) and not panel.generate_button.disabled and torch.is_grad_enabled()


def test_a_feature_that_never_fired_is_flagged_and_refused(setup):
    model, sae, store = setup
    silent = dataclasses.replace(store, max_activation=store.max_activation.clone())
    silent.max_activation[5] = 0.0
    panel = steering_panel(model, sae, silent, feature=int(store.max_activation.argmax()), max_new_tokens=4)
    panel.feature.value = 5
    assert "never fired" in panel.feature_info.value
    panel.generate_button.click()
    assert "feature 5 never fired on the store's corpus" in panel.status.value
    assert isinstance(panel.last_error, ValueError) and panel.replies["steered"] == []
    assert not lm.active_hook_points(model)


def test_bad_panel_arguments_are_one_line_errors(setup):
    model, sae, store = setup
    other = SAE(SAEConfig(d_in=32, d_sae=8, hook_name=HOOK), seed=0)
    cases = [
        (dict(feature=24), "feature must be an integer in 0..23"),
        (dict(feature=-1), "feature must be an integer in 0..23"),
        (dict(multiple=float("nan")), "multiple must be a finite number"),
        (dict(multiple=float("inf")), "multiple must be a finite number"),
        (dict(multiple=25.0), "multiple must be between -10 and 20"),
        (dict(max_new_tokens=0), "max_new_tokens must be an integer in 1..256"),
        (dict(sae=other), "the feature store was built for an SAE with d_sae=24, but this SAE has d_sae=8"),
        (dict(sae=SAE(SAEConfig(d_in=16, d_sae=24), seed=0)), "d_in=16 but the model's d_model is 32"),
    ]
    for overrides, message in cases:
        arguments = dict(model=model, sae=sae, store=store) | overrides
        with pytest.raises(ValueError) as error:
            steering_panel(**arguments)
        assert message in str(error.value) and "\n" not in str(error.value)
    assert clamp_value(store, 3, 0.0) == 0.0
    assert clamp_value(store, 3, -1.5) == pytest.approx(-1.5 * store.max_activation[3].item())


def test_clamp_value_from_the_widget_module_still_works_but_warns(setup):
    _, _, store = setup
    import saelab.widgets.steer_panel as panel_module

    with pytest.warns(DeprecationWarning, match="saelab.steering_search.clamp_value"):
        from saelab.widgets.steer_panel import clamp_value as old_clamp_value
    assert old_clamp_value(store, 3, 2.0) == clamp_value(store, 3, 2.0) == pytest.approx(2 * store.max_activation[3].item())
    with pytest.warns(DeprecationWarning, match="CLAMP_MULTIPLE_RANGE"):
        assert panel_module.MULTIPLE_RANGE == (-10.0, 20.0)
    with pytest.raises(ValueError, match="multiple must be between -10 and 20"):
        clamp_value(store, 3, 25.0)


def test_a_reply_escapes_html_keeps_line_breaks_and_shades_by_activation_over_the_max():
    from saelab.streaming import StreamedToken
    from saelab.widgets.steer_panel import reply_html

    steps = [StreamedToken(1, "<b>", 2.0), StreamedToken(2, "\nnext", 0.0), StreamedToken(3, "", 9.0),
             StreamedToken(4, " big", 8.0)]
    text = reply_html("steered", steps, scale=4.0, writing=True)
    assert "&lt;b&gt;" in text and "<b>steered</b>" in text and ">\nnext</span>" in text
    assert "rgba(255,127,14,0.50)" in text and "rgba(255,127,14,0.00)" in text and "rgba(255,127,14,1.00)" in text
    assert text.count("<span title=") == 3 and "▌" in text  # the end-of-turn token adds no span
    assert "▌" not in reply_html("steered", steps, scale=4.0)


def test_after_a_slider_move_only_the_steered_reply_is_rewritten(setup):
    model, sae, store = setup
    feature = int(store.max_activation.argmax())
    top = store.max_activation[feature].item()
    panel = steering_panel(model, sae, store, feature=feature, multiple=10.0, max_new_tokens=6)
    panel.generate_button.click()
    first_baseline = list(panel.replies["baseline"])
    progress = []
    panel.status.observe(lambda change: progress.append(change["new"]), names="value")
    panel.multiple.value = -10.0
    panel.generate_button.click()
    assert panel.replies["baseline"] == first_baseline
    assert progress[0] == "<i>writing… baseline 6 · steered 1 tokens</i>"  # no baseline token was recomputed
    expected = steer.generate_replies(model, PROMPT, sae=sae, clamps={feature: -10.0 * top}, max_new_tokens=6)
    assert "".join(t.text for t in panel.replies["steered"]).strip() == expected.steered
    progress.clear()
    panel.prompt.value = "Tell me about the fox."  # new settings: both replies are written afresh
    panel.generate_button.click()
    assert progress[0] == "<i>writing… baseline 1 · steered 0 tokens</i>"
    assert "".join(t.text for t in panel.replies["baseline"]).strip() == steer.generate_replies(
        model, "Tell me about the fox.", sae=sae, clamps={feature: -10.0 * top}, max_new_tokens=6).baseline


def test_the_steered_label_follows_the_slider_and_says_when_the_reply_on_show_is_older(setup):
    model, sae, store = setup
    feature = int(store.max_activation.argmax())
    top = store.max_activation[feature].item()
    panel = steering_panel(model, sae, store, feature=feature, multiple=1.0, max_new_tokens=4)
    panel.generate_button.click()
    assert "clamped at 1 × max" in panel.steered.value and "press Generate" not in panel.steered.value
    panel.multiple.value = 1.75  # what three presses of the right arrow on the slider's handle do
    assert "clamped at 1.75 × max" in panel.steered.value
    assert "written at 1 × max: press Generate" in panel.steered.value
    # Both units: the push where the feature was silent, over the median residual norm at the hook.
    norm = collect_activations(model, HOOK, lm.chat_tokens(model, PROMPT), progress=False).norm(dim=-1).median().item()
    push = 1.75 * top * sae.W_dec[feature].norm().item() / norm
    assert f"push {push:.2f} × the median residual norm" in panel.steered.value
    assert f"{push:.2f} × the median residual norm" in panel.feature_info.value
    panel.generate_button.click()
    assert "clamped at 1.75 × max" in panel.steered.value and "press Generate" not in panel.steered.value
    assert "1.75 × max, a push of" in panel.status.value

