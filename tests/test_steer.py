"""Steering hooks on the tiny model: exactness, clean removal, nesting, and one-line errors."""

from functools import partial

import pytest
import torch

from saelab import lm, steer, streaming
from saelab.harvest import collect_activations
from saelab.sae import SAE, SAEConfig

HOOK = "blocks.2.hook_resid_post"



@pytest.fixture(scope="module")
def sae():
    return SAE(SAEConfig(d_in=32, d_sae=64, architecture="topk", k=4, hook_name=HOOK), seed=0)


@pytest.fixture(scope="module")
def tokens(tiny_model):
    return tiny_model.to_tokens("The quick brown fox jumps over the lazy dog.")


def test_clamping_features_to_their_current_values_changes_no_logit(tiny_model, sae, tokens):
    clean = tiny_model(tokens)
    acts = collect_activations(tiny_model, HOOK, tokens, progress=False, drop_bos=False)
    ids = torch.tensor([3, 17, 40])
    current = sae.encode(acts.float())[:, ids].view(1, tokens.shape[1], 3)
    with tiny_model.hooks(fwd_hooks=[(HOOK, partial(steer.clamp_hook, sae=sae, feature_ids=ids, values=current))]):
        same = tiny_model(tokens)
    assert (same - clean).abs().max() < 1e-4


def test_clamping_a_silent_feature_to_zero_through_the_api_changes_nothing(tiny_model, sae, tokens):
    acts = collect_activations(tiny_model, HOOK, tokens, progress=False, drop_bos=False)
    silent = int((sae.encode(acts.float()) == 0).all(0).nonzero()[0])
    clean = tiny_model(tokens)
    with steer.clamp(tiny_model, sae, {silent: 0.0}):
        assert (tiny_model(tokens) - clean).abs().max() < 1e-4


def test_a_clamp_moves_the_activation_along_the_features_decoder_row(tiny_model, sae, tokens):
    seen = {}
    recorder = (HOOK, lambda act, hook: seen.setdefault("after", act.clone()))
    base = collect_activations(tiny_model, HOOK, tokens, progress=False, drop_bos=False)
    with steer.clamp(tiny_model, sae, {5: 10.0}), tiny_model.hooks(fwd_hooks=[recorder]):
        tiny_model(tokens)
    current = sae.encode(base.float())[:, 5]
    expected = base + (10.0 - current)[:, None] * sae.W_dec[5]
    assert torch.allclose(seen["after"][0], expected, atol=1e-4)


def test_hooks_are_removed_after_an_exception_and_keyboard_interrupt(tiny_model, sae, tokens):
    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with steer.clamp(tiny_model, sae, {1: 3.0}):
                assert lm.active_hook_points(tiny_model)
                raise error
        assert not lm.active_hook_points(tiny_model)


def test_contexts_nest_and_the_inner_exit_keeps_the_outer_hook(tiny_model, sae, tokens):
    direction = torch.randn(32)
    with steer.add(tiny_model, HOOK, direction, alpha=2.0):
        added_only = tiny_model(tokens)
        with steer.clamp(tiny_model, sae, {1: 5.0, 2: 0.0}):
            both = tiny_model(tokens)
        after_inner = tiny_model(tokens)
    assert not torch.allclose(both, added_only)
    assert torch.allclose(after_inner, added_only)
    assert not lm.active_hook_points(tiny_model)


def test_contrastive_direction_is_the_difference_of_mean_activations(tiny_model):
    positive, negative = ["brown fox", "lazy dog"], ["the word"]
    direction = steer.contrastive_direction(tiny_model, HOOK, positive, negative)
    mean = lambda texts: torch.cat([collect_activations(tiny_model, HOOK, tiny_model.to_tokens(t),
                                                              progress=False) for t in texts]).mean(0)
    assert torch.allclose(direction, mean(positive) - mean(negative), atol=1e-5)


def test_generate_returns_the_unsteered_and_the_steered_reply_reproducibly(tiny_model, sae):
    first = steer.generate(tiny_model, "What is your physical form?", sae=sae, clamps={7: 50.0},
                           max_new_tokens=6, temperature=1.0, seed=3)
    again = steer.generate(tiny_model, "What is your physical form?", sae=sae, clamps={7: 50.0},
                           max_new_tokens=6, temperature=1.0, seed=3)
    assert first == again and isinstance(first.baseline, str)
    assert not lm.active_hook_points(tiny_model)


def test_bad_steering_requests_are_refused_and_leave_no_hook(tiny_model, sae):
    other_width = SAE(SAEConfig(d_in=16, d_sae=8, hook_name=HOOK), seed=0)
    other_hook = SAE(SAEConfig(d_in=32, d_sae=8, hook_name="blocks.1.hook_resid_post"), seed=0)
    cases = [
        (lambda: steer.clamp(tiny_model, sae, {64: 1.0}), "feature must be an integer in 0..63"),
        (lambda: steer.clamp(tiny_model, sae, {3: float("nan")}), "must be a finite number"),
        (lambda: steer.clamp(tiny_model, sae, {}), "clamps is empty"),
        (lambda: steer.clamp(tiny_model, other_width, {0: 1.0}), "d_in=16 but the model's d_model is 32"),
        (lambda: steer.clamp(tiny_model, other_hook, {0: 1.0}, hook_name=HOOK), "trained on 'blocks.1"),
        (lambda: steer.add(tiny_model, HOOK, torch.ones(5), 1.0), "direction must have shape (d_model=32,)"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError) as error:
            with make():
                pass
        assert message in str(error.value) and "\n" not in str(error.value)
        assert not lm.active_hook_points(tiny_model)


def test_clamping_several_features_at_once_moves_along_each_decoder_row(tiny_model, sae, tokens):
    seen = {}
    recorder = (HOOK, lambda act, hook: seen.setdefault("after", act.clone()))
    base = collect_activations(tiny_model, HOOK, tokens, progress=False, drop_bos=False)
    with steer.clamp(tiny_model, sae, {5: 10.0, 9: 0.0, 30: -4.0}), tiny_model.hooks(fwd_hooks=[recorder]):
        tiny_model(tokens)
    codes = sae.encode(base.float())
    expected = base + sum((value - codes[:, f])[:, None] * sae.W_dec[f] for f, value in
                          {5: 10.0, 9: 0.0, 30: -4.0}.items())
    assert torch.allclose(seen["after"][0], expected, atol=1e-4)


def test_two_saes_at_two_hooks_steer_together_nested_or_as_one_hook_list(tiny_model, sae, tokens):
    early = SAE(SAEConfig(d_in=32, d_sae=48, architecture="topk", k=4,
                          hook_name="blocks.1.hook_resid_post"), seed=2)
    clean = tiny_model(tokens)
    with steer.clamp(tiny_model, early, {4: 8.0}):
        early_only = tiny_model(tokens)
        with steer.clamp(tiny_model, sae, {7: 8.0}):
            nested = tiny_model(tokens)
    hooks = steer.clamp_hooks(tiny_model, early, {4: 8.0}) + steer.clamp_hooks(tiny_model, sae, {7: 8.0})
    with torch.no_grad():
        together = tiny_model.run_with_hooks(tokens, fwd_hooks=hooks)
    assert torch.allclose(nested, together, atol=1e-5)
    assert (nested - early_only).abs().max() > 1e-3 and (early_only - clean).abs().max() > 1e-3
    assert not lm.active_hook_points(tiny_model)


def test_stream_replies_interleaves_the_replies_generate_gives(tiny_model, sae):
    options = dict(sae=sae, clamps={7: 50.0}, max_new_tokens=6, temperature=1.0, seed=3)
    order, replies = [], {"baseline": [], "steered": []}
    for which, token in steer.stream_replies(tiny_model, "What is your physical form?", feature=7, **options):
        order.append(which)
        replies[which].append(token)
        assert not lm.active_hook_points(tiny_model)  # steering is on only while a token is computed
    assert order[:4] == ["baseline", "steered", "baseline", "steered"]
    expected = steer.generate(tiny_model, "What is your physical form?", **options)
    assert tuple(streaming.reply_text(replies[name]) for name in ("baseline", "steered")) == expected
    assert all(token.activation is not None for token in replies["baseline"] + replies["steered"])


def test_bad_stream_replies_requests_are_refused_before_generating(tiny_model, sae):
    cases = [
        (dict(clamps={3: 1.0}), "clamps need the sae"),
        (dict(sae=sae, clamps={3: 1.0}, direction=torch.ones(32)), "give either clamps"),
        (dict(direction=torch.ones(32), alpha=1.0, hook_name=HOOK, feature=2), "feature needs the sae"),
        (dict(direction=torch.ones(32), alpha=1.0, hook_name="blocks.9.hook_resid_post"), "beyond the model's"),
        (dict(direction=torch.ones(32), alpha=float("inf"), hook_name=HOOK), "alpha must be a finite number"),
        (dict(sae=sae, clamps={3: 1.0}, feature=99), "feature must be an integer in 0..63"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError) as error:
            steer.stream_replies(tiny_model, "hello", max_new_tokens=4, **arguments)
        assert message in str(error.value) and "\n" not in str(error.value)
    assert not lm.active_hook_points(tiny_model)


def test_stream_replies_takes_generates_options_and_refuses_others(tiny_model, sae):
    with pytest.raises(TypeError, match="clamp"):
        steer.stream_replies(tiny_model, "hello", sae=sae, clamp={7: 1.0})
