"""Steering methods head to head on the tiny model: each batched row is the method at its push, exactly as
steering one prompt alone would be; the proxies and the aggregation count what they say."""

import math

import pytest
import torch

from saelab import lm, steer, steering_comparison
from saelab.steering_search import reply_perplexity
from saelab.sae import SAE, SAEConfig

HOOK = "blocks.1.hook_resid_post"
PROMPTS = ["What is your physical form?", "Who are you?"]


@pytest.fixture(scope="module")
def sae(lively_tiny_model):
    sae = SAE(SAEConfig(d_in=lively_tiny_model.cfg.d_model, d_sae=48, architecture="topk", k=6,
                        hook_name=HOOK), seed=0)
    return sae.eval()


def _alone(model, prompt, hooks, system=None, new=6):
    tokens = lm.chat_tokens(model, prompt, system)
    reply = lm.generate(model, tokens, new, fwd_hooks=hooks)[0]
    return model.tokenizer.decode(reply, skip_special_tokens=True).strip()


def test_each_row_of_a_batched_sweep_is_the_method_alone_at_its_push(lively_tiny_model, sae):
    model, feature, median = lively_tiny_model, 5, 3.0
    direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    methods = [steering_comparison.clamp_method("clamp", sae, feature),
               steering_comparison.add_method("add", HOOK, 4.0 * direction)]
    pushes = [0.0, 0.5, 2.0]
    for method in methods:
        replies = steering_comparison.method_replies(model, method, PROMPTS, pushes, median, concept_words=["x"],
                                                     identity_noun="x", max_new_tokens=6, progress=False)
        assert [(r.prompt, r.push) for r in replies] == [(p, push) for p in PROMPTS for push in pushes]
        for r in replies:
            length = r.push * median
            if method.kind == "clamp":
                value = length / sae.W_dec[feature].norm().item()
                hooks = steer.clamp_hooks(model, sae, {feature: value})
            else:
                hooks = steer.add_hooks(model, HOOK, direction / direction.norm(), length)
            assert r.reply == _alone(model, r.prompt, hooks), (method.name, r.push)
    # A push of 0 is the unsteered reply for the additive method; a push matters (else the test shows nothing).
    plain = _alone(model, PROMPTS[0], [])
    assert replies[0].reply == plain and replies[2].reply != plain
    assert not lm.active_hook_points(model)


def test_a_system_prompt_answers_once_per_prompt_and_is_judged_after_the_plain_question(lively_tiny_model):
    model = lively_tiny_model
    method = steering_comparison.system_method("system prompt", "You are a fox.")
    replies = steering_comparison.method_replies(model, method, PROMPTS, [], 1.0, concept_words=["fox"],
                                                 identity_noun="fox", max_new_tokens=6, progress=False)
    assert [r.prompt for r in replies] == PROMPTS and all(math.isnan(r.push) for r in replies)
    for r in replies:
        assert r.reply == _alone(model, r.prompt, [], system="You are a fox.")
        # Judged after the plain question: how odd the reply reads without the system prompt that caused it.
        new = lm.generate(model, lm.chat_tokens(model, r.prompt, "You are a fox."), 6)[0]
        new = new[new != model.tokenizer.eos_token_id]
        assert r.perplexity == pytest.approx(reply_perplexity(model, lm.chat_tokens(model, r.prompt), new), rel=1e-4)

def test_perplexities_of_a_padded_batch_equal_one_reply_at_a_time(lively_tiny_model):
    model = lively_tiny_model
    prompt = lm.chat_tokens(model, PROMPTS[0])
    replies = [torch.tensor([5, 9, 11, 3]), torch.tensor([7]), torch.tensor([], dtype=torch.long)]
    batched = steering_comparison._perplexities(model, prompt[0], replies)
    assert batched[0] == pytest.approx(reply_perplexity(model, prompt, replies[0]), rel=1e-4)
    assert batched[1] == pytest.approx(reply_perplexity(model, prompt, replies[1]), rel=1e-4)
    assert math.isnan(batched[2])


def _reply(method, push, on_topic, claim, about, fluent, ppl):
    return steering_comparison.Reply(method, push, "p", "text", on_topic, claim, about, fluent, 0.0, ppl)


def test_dose_response_counts_each_proxy_and_best_settings_prefer_claims_then_successes():
    replies = [
        _reply("clamp", 0.5, True, False, True, True, 10.0), _reply("clamp", 0.5, True, True, True, True, 9.0),
        _reply("clamp", 1.0, True, True, False, False, 90.0), _reply("clamp", 1.0, True, True, True, False, 70.0),
        _reply("system", math.nan, True, False, True, True, 5.0), _reply("system", math.nan, False, False, True, True, 7.0),
    ]
    points = steering_comparison.dose_response(replies)
    assert [(p.method, p.claims_identity, p.success) for p in points[:2]] == [("clamp", 0.5, 1.0), ("clamp", 1.0, 0.0)]
    assert points[1].fluent == 0.0 and points[1].about_itself == 0.5 and points[1].median_perplexity == 70.0
    system = points[2]
    assert math.isnan(system.push) and system.on_topic == 0.5 and system.median_perplexity == 5.0
    odd = _reply("clamp", 0.5, True, True, True, True, steering_comparison.MAX_PERPLEXITY + 1)
    assert not odd.success  # on topic and loop-free, but the plain model finds it too odd
    best = {p.method: p for p in steering_comparison.best_settings(points)}
    # Both clamp pushes claim identity in half or more; 1.0 claims more (1.0 vs 0.5), so it wins.
    assert best["clamp"].push == 1.0 and best["system"].on_topic == 0.5
    # With no claims and no successes anywhere, the push with more replies on topic wins over a lower perplexity.
    quiet = [_reply("add", 0.3, False, False, True, True, 3.0), _reply("add", 0.7, True, False, True, True, 20.0)]
    assert steering_comparison.best_settings(steering_comparison.dose_response(quiet))[0].push == 0.7


def test_bad_methods_and_sweeps_are_refused_in_one_line(lively_tiny_model, sae):
    model = lively_tiny_model
    with pytest.raises(ValueError, match="non-zero length"):
        steering_comparison.add_method("add", HOOK, torch.zeros(model.cfg.d_model))
    with pytest.raises(ValueError, match="system must be a non-empty string"):
        steering_comparison.system_method("s", " ")
    method = steering_comparison.clamp_method("clamp", sae, 3)
    with pytest.raises(ValueError, match="pushes must be finite numbers >= 0"):
        steering_comparison.method_replies(model, method, PROMPTS, [-1.0], 1.0, concept_words=["x"],
                                           identity_noun="x")
    with pytest.raises(ValueError, match="prompts must hold at least one prompt"):
        steering_comparison.method_replies(model, method, [], [1.0], 1.0, concept_words=["x"], identity_noun="x")


def test_contrastive_directions_of_several_hooks_in_one_pass_equal_steers_one_at_a_time(lively_tiny_model):
    model = lively_tiny_model
    positive, negative = ["The quick brown fox jumps", "A fox ran"], ["In the beginning was the word"]
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    found = steering_comparison.contrastive_directions(model, hooks, positive, negative, progress=False)
    for name in hooks:
        assert torch.allclose(found[name], steer.contrastive_direction(model, name, positive, negative), atol=1e-5)
    with pytest.raises(ValueError, match="positive and negative must each hold"):
        steering_comparison.contrastive_directions(model, hooks, positive, [], progress=False)


def test_the_persona_vector_is_the_mean_in_the_role_minus_the_mean_out_of_it(lively_tiny_model):
    model, system = lively_tiny_model, "You are a fox."
    directions = steering_comparison.persona_directions(model, [HOOK, "blocks.2.hook_resid_post"], PROMPTS, system,
                                                        max_new_tokens=5, progress=False)
    eos = model.tokenizer.eos_token_id
    means = {}
    for role, role_system in (("persona", system), ("plain", None)):
        rows = []
        for prompt in PROMPTS:  # one hook at a time, each reply generated again
            tokens = lm.chat_tokens(model, prompt, role_system)
            reply = lm.generate(model, tokens, 5)[0]
            reply = reply[reply != eos]
            _, cache = model.run_with_cache(torch.cat([tokens[0], reply])[None], names_filter=[HOOK])
            rows.append(cache[HOOK][0, tokens.shape[1] - 1:])
        means[role] = torch.cat(rows).mean(0)
    assert torch.allclose(directions[HOOK], means["persona"] - means["plain"], atol=1e-5)
    assert directions[HOOK].norm() > 0 and set(directions) == {HOOK, "blocks.2.hook_resid_post"}
    assert not lm.active_hook_points(model)
    with pytest.raises(ValueError, match="system must be a non-empty string"):
        steering_comparison.persona_directions(model, [HOOK], PROMPTS, " ", progress=False)
    with pytest.raises(ValueError, match="prompts must hold at least one prompt"):
        steering_comparison.persona_directions(model, [HOOK], [], system, progress=False)
