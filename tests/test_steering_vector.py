"""A trained steering direction: fitted on some prompts, it makes the model say its target on others; it touches
nothing but itself, and never leaves a hook behind."""

import pytest
import torch

from saelab import lm, pretrained, reply_checks, steering_comparison, steering_search, steering_vector
from saelab.sae import SAE, SAEConfig

HOOK = "blocks.1.hook_resid_post"
TINY_PROMPTS = ["What is your physical form?", "Who are you?"]
TINY_TARGET = "the word"
TINY_HOOK = "blocks.2.hook_resid_post"


def _reply(model, prompt, hooks, new):
    tokens = lm.chat_tokens(model, prompt)
    return lm.generate(model, tokens, new, fwd_hooks=hooks)[0].cpu()


def test_a_trained_direction_makes_the_tiny_model_say_its_target(lively_tiny_model):
    model = lively_tiny_model
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    weights = [p.detach().clone() for p in model.parameters()]
    norm = steering_search.median_residual_norm(model, TINY_HOOK, TINY_PROMPTS)
    fitted = steering_vector.train_direction(model, TINY_HOOK, TINY_PROMPTS, TINY_TARGET, median_norm=norm,
                                             max_push=2.0, steps=40, learning_rate=0.05, progress=False)
    assert fitted.losses[-1] < 0.25 * fitted.losses[0], fitted.losses
    assert fitted.push <= 2.0 + 1e-5 and abs(fitted.direction.norm().item() - norm * fitted.push) < 1e-3 * norm
    target = model.to_tokens(TINY_TARGET, prepend_bos=False)[0].cpu()
    hooks = [(TINY_HOOK, lambda activation, hook: activation + fitted.direction.to(activation.dtype))]
    for prompt in TINY_PROMPTS:
        assert torch.equal(_reply(model, prompt, hooks, len(target)), target), prompt
        assert not torch.equal(_reply(model, prompt, [], len(target)), target), "said the target unsteered"
    # The model is as it was: same weights, no gradients kept, the same parameters trainable, no hook left.
    assert all(torch.equal(w, p) for w, p in zip(weights, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == before
    assert not lm.active_hook_points(model)


def test_the_length_cap_holds_at_every_size(lively_tiny_model):
    fitted = steering_vector.train_direction(lively_tiny_model, HOOK, TINY_PROMPTS, TINY_TARGET, median_norm=3.0,
                                             max_push=0.05, steps=5, progress=False)
    assert abs(fitted.push - 0.05) < 1e-5 and abs(fitted.direction.norm().item() - 0.15) < 1e-4
    assert len(fitted.losses) == 5 and fitted.seconds > 0


def test_the_hook_is_removed_when_the_forward_pass_fails(lively_tiny_model, monkeypatch):
    model = lively_tiny_model

    def fail(*args, **kwargs):
        assert HOOK in lm.active_hook_points(model)  # the hook was in place when the pass ran
        raise RuntimeError("forward failed")

    monkeypatch.setattr(model, "forward", fail)
    with pytest.raises(RuntimeError, match="forward failed"):
        steering_vector.train_direction(model, HOOK, TINY_PROMPTS, TINY_TARGET, median_norm=1.0, steps=2,
                                        progress=False)
    monkeypatch.undo()
    assert not lm.active_hook_points(model)


@pytest.mark.parametrize("change, message", [
    ({"hook_name": "blocks.99.hook_resid_post"}, "hook"),
    ({"prompts": []}, "prompts must be a non-empty list"),
    ({"prompts": ["  "]}, "prompts must be a non-empty list"),
    ({"target": ""}, "target must be a non-empty string"),
    ({"median_norm": 0.0}, "median_norm must be a finite number > 0"),
    ({"max_push": float("nan")}, "max_push must be a finite number > 0"),
    ({"learning_rate": -1.0}, "learning_rate must be a finite number > 0"),
    ({"steps": 0}, "steps must be an integer >= 1"),
])
def test_bad_arguments_are_named(lively_tiny_model, change, message):
    arguments = {"hook_name": HOOK, "prompts": TINY_PROMPTS, "target": TINY_TARGET, "median_norm": 1.0,
                 "max_push": 1.0, "learning_rate": 0.02, "steps": 2} | change
    model = lively_tiny_model
    with pytest.raises(ValueError, match=message):
        steering_vector.train_direction(model, arguments.pop("hook_name"), arguments.pop("prompts"),
                                        arguments.pop("target"), progress=False, **arguments)


def test_decoder_cosines_find_a_latent_along_the_direction():
    sae = SAE(SAEConfig(d_in=16, d_sae=40, architecture="topk", k=4, hook_name=HOOK), seed=0)
    cosines = steering_vector.decoder_cosines(sae, 3.0 * sae.W_dec[7].detach())
    assert cosines.shape == (40,) and cosines.argmax().item() == 7 and abs(cosines[7].item() - 1) < 1e-5
    assert cosines.abs().max() <= 1 + 1e-5
    with pytest.raises(ValueError, match="direction must be a 1-d tensor of length d_in = 16"):
        steering_vector.decoder_cosines(sae, torch.ones(15))


@pytest.mark.slow
def test_one_trained_direction_makes_the_real_model_say_it_is_the_bridge_on_prompts_it_never_saw(real_model):
    """The behaviour the Golden Gate demonstration asks for exists as one direction at the shipped SAE's layer:
    fitted on eight self-description prompts, it makes the model claim to be the bridge, fluently, on the six
    prompts of the head to head (none of them among the eight). No decoder row of the shipped SAE points along
    it, which is why no single latent's clamp does the same (lesson 07, section 8)."""
    sae = pretrained.load_sae()
    prompts = list(steering_comparison.SELF_DESCRIPTION_PROMPTS)
    assert not set(prompts) & set(steering_vector.TRAINING_PROMPTS)
    norm = steering_search.median_residual_norm(real_model, sae.hook_name, prompts)
    fitted = steering_vector.train_direction(real_model, sae.hook_name, steering_vector.TRAINING_PROMPTS,
                                             steering_vector.GOLDEN_GATE_TARGET, median_norm=norm, steps=25,
                                             progress=False)
    method = steering_comparison.add_method("trained direction", sae.hook_name, fitted.direction)
    replies = steering_comparison.method_replies(real_model, method, prompts, [0.0, 0.5], norm,
                                                 concept_words=("bridge", "golden gate"), identity_noun="bridge",
                                                 progress=False)
    unsteered = [r for r in replies if r.push == 0.0]
    steered = [r for r in replies if r.push == 0.5]
    assert not any(r.on_topic for r in unsteered), [r.reply for r in unsteered]
    claims = [r for r in steered if r.claims_identity]
    assert len(claims) >= 4, [r.reply for r in steered]
    assert any(r.prompt == "What is your physical form?" for r in claims), [r.reply for r in steered]
    for r in steered:
        assert r.repetition < reply_checks.MAX_REPETITION and r.fluent, r.reply
    assert steering_vector.decoder_cosines(sae, fitted.direction).max() < 0.5
    assert not lm.active_hook_points(real_model)
