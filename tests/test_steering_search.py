"""Choosing a steering feature by its effect: per-row clamps, strengths in two units, the concept gain."""

from functools import partial

import pytest
import torch

from saelab import lm, steer, steering_search
from saelab.sae import SAE, SAEConfig

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def sae(tiny_model):
    sae = SAE(SAEConfig(d_in=tiny_model.cfg.d_model, d_sae=48, architecture="topk", k=6,
                        hook_name=HOOK), seed=0)
    return sae.eval()


def test_each_row_gets_its_own_clamp_exactly_as_steer_clamps_it(tiny_model, sae):
    tokens = tiny_model.to_tokens(["The quick brown fox jumps", "The quick brown fox jumps", "In the beginning was"])
    ids, values = torch.tensor([3, 7, -1]), torch.tensor([2.0, 0.5, 0.0])
    with torch.no_grad():
        rows = tiny_model.run_with_hooks(tokens, fwd_hooks=[(HOOK, partial(steering_search.row_clamp_hook, sae=sae,
                                                                           feature_ids=ids, values=values))])
        for b in range(2):
            alone = tiny_model.run_with_hooks(tokens[b:b + 1], fwd_hooks=steer.clamp_hooks(
                tiny_model, sae, {int(ids[b]): float(values[b])}))
            assert torch.allclose(rows[b], alone[0], atol=1e-5)
        assert torch.allclose(rows[2], tiny_model(tokens[2:3])[0], atol=1e-6)  # -1: the row is left alone


def test_strengths_convert_between_multiples_of_max_and_push_fractions(sae):
    by_push = steering_search.strength_for_push(sae, 5, 0.5, median_norm=10.0, max_activation=2.0)
    assert by_push.value * sae.W_dec[5].norm().item() == pytest.approx(5.0)
    by_multiple = steering_search.strength_for_multiple(sae, 5, by_push.multiple_of_max, 10.0, 2.0)
    assert by_multiple.value == pytest.approx(by_push.value)
    assert by_multiple.push_fraction == pytest.approx(0.5)
    with pytest.raises(ValueError, match="push_fraction must be a finite number >= 0"):
        steering_search.strength_for_push(sae, 5, -1.0, 10.0, 2.0)
    with pytest.raises(ValueError, match="feature must be an integer in 0..47"):
        steering_search.strength_for_multiple(sae, 48, 1.0, 10.0, 2.0)


def test_concept_gain_is_the_log_prob_change_measured_one_feature_at_a_time(tiny_model, sae):
    prompts, continuations = ["hello", "What is your physical form?"], [" I am a small", " the word"]
    median = steering_search.median_residual_norm(tiny_model, HOOK, prompts)
    features = [0, 3, 11]
    gains = steering_search.concept_gain(tiny_model, sae, features, prompts, continuations, 0.8, median,
                                         features_per_pass=2, progress=False)
    expected = []
    for feature in features:
        value = 0.8 * median / sae.W_dec[feature].norm().item()
        total = 0.0
        for prompt in prompts:
            tokens, scored = steering_search._continuation_batch(tiny_model, prompt, continuations)
            base = steering_search.mean_logprob(tiny_model, tokens, scored, [])
            steered = steering_search.mean_logprob(tiny_model, tokens, scored,
                                                    steer.clamp_hooks(tiny_model, sae, {feature: value}))
            total += float((steered - base).mean())
        expected.append(total / len(prompts))
    assert torch.allclose(gains, torch.tensor(expected), atol=1e-4)
    assert gains.abs().max() > 1e-3  # the clamps really moved the log-probabilities
    assert not lm.active_hook_points(tiny_model)


def test_the_logit_effect_ranking_reads_decoder_rows_through_the_unembedding(tiny_model, sae):
    ids = steering_search.concept_token_ids(tiny_model, ["fox"])
    scores = steering_search.logit_effect_ranking(tiny_model, sae, ids)
    assert scores.shape == (sae.cfg.d_sae,)
    saved = sae.W_dec[9].detach().clone()
    with torch.no_grad():
        sae.W_dec[9] = tiny_model.W_U[:, ids[0]] / tiny_model.ln_final.w  # points straight at the concept token
        top = int(steering_search.logit_effect_ranking(tiny_model, sae, ids).argmax())
        sae.W_dec[9] = saved
    assert top == 9


def test_reply_scores_answer_each_prompt_and_rate_the_reply(tiny_model, sae):
    prompts = ["hello", "What is your physical form?"]
    hooks = steer.clamp_hooks(tiny_model, sae, {3: 2.0})
    scores = steering_search.reply_scores(tiny_model, prompts, hooks, concept_words=["fox"], identity_noun="fox",
                                          max_new_tokens=6)
    assert [s.prompt for s in scores] == prompts
    for score in scores:
        expected = lm.chat(tiny_model, score.prompt, max_new_tokens=6, fwd_hooks=hooks)
        assert score.reply == expected
        assert score.perplexity > 1 and score.repetition >= 0
    assert not lm.active_hook_points(tiny_model)


def test_a_reply_scan_row_is_the_feature_clamped_alone(tiny_model, sae):
    median, top = 4.0, torch.full((sae.cfg.d_sae,), 0.5)
    found = steering_search.reply_scan(tiny_model, sae, [3, 9, 3], "Who are you?", 0.8, median, top,
                                       concept_words=["fox"], identity_noun="fox", max_new_tokens=5,
                                       rows_per_pass=2, progress=False)
    assert [r.feature for r in found] == [3, 9, 3]
    for r in found:
        value = 0.8 * median / sae.W_dec[r.feature].norm().item()
        assert r.strength.value == pytest.approx(value) and r.strength.multiple_of_max == pytest.approx(value / 0.5)
        alone = lm.chat(tiny_model, "Who are you?", max_new_tokens=5,
                        fwd_hooks=steer.clamp_hooks(tiny_model, sae, {r.feature: value}))
        assert r.reply == alone
        assert r.on_topic == ("fox" in alone.lower())
    assert found[0].reply == found[2].reply  # the same feature in another pass and row
    assert not lm.active_hook_points(tiny_model)
    with pytest.raises(ValueError, match="features must hold at least one"):
        steering_search.reply_scan(tiny_model, sae, [], "Who are you?", 0.8, median, top, concept_words=["fox"],
                                   identity_noun="fox")
