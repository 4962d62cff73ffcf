"""Cached decoding equals uncached decoding: the property a transformers / TransformerLens pair can break while
full forward passes stay exact (transformers 5.24 with TransformerLens 4.3 decoded "The-----------")."""

from functools import partial

import pytest
import torch

from saelab import lm, streaming
from saelab.sae import SAE, SAEConfig

HOOK = "blocks.1.hook_resid_post"
PROMPTS = ["The quick brown fox", "In the beginning was the word", "What is your physical form?"]


def greedy_without_cache(model, tokens, max_new_tokens, fwd_hooks=()):
    """The reference: one full forward pass per new token, nothing cached."""
    with torch.no_grad(), model.hooks(fwd_hooks=list(fwd_hooks)):
        for _ in range(max_new_tokens):
            next_token = model(tokens)[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, next_token], dim=1)
    return tokens[0, -max_new_tokens:].tolist()


def push(activation, hook, direction):
    return activation + direction


@pytest.fixture(scope="module")
def steering(lively_tiny_model):
    direction = torch.randn(lively_tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    return [(HOOK, partial(push, direction=3 * direction))]


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("hooked", [False, True], ids=["plain", "steered"])
def test_lm_generate_and_streams_decode_as_full_passes_do(lively_tiny_model, steering, prompt, hooked):
    model = lively_tiny_model
    hooks = steering if hooked else []
    tokens = model.to_tokens(prompt)
    expected = greedy_without_cache(model, tokens, 32, hooks)
    assert len(set(expected)) > 3, "the reference must not be a constant reply, or the check proves nothing"
    assert lm.generate(model, tokens, 32, fwd_hooks=hooks, stop_at_eos=False)[0].tolist() == expected
    streamed = [step.token for step in streaming.stream_generate(model, tokens, 32, fwd_hooks=hooks,
                                                                 stop_at_eos=False)]
    assert streamed == expected
    assert not lm.active_hook_points(model)


def test_a_stream_that_tracks_a_feature_decodes_the_same_tokens(lively_tiny_model, steering):
    model = lively_tiny_model
    sae = SAE(SAEConfig(d_in=model.cfg.d_model, d_sae=64, architecture="topk", k=4, hook_name=HOOK))
    tokens = model.to_tokens(PROMPTS[0])
    tracked = [step.token for step in streaming.stream_generate(model, tokens, 24, fwd_hooks=steering, sae=sae,
                                                                feature=0, stop_at_eos=False)]
    assert tracked == greedy_without_cache(model, tokens, 24, steering)


def test_the_load_time_check_passes_on_a_sound_pair(lively_tiny_model):
    lm.check_cached_decoding(lively_tiny_model, prompt=PROMPTS[0], max_new_tokens=12)


def test_the_load_time_check_stops_a_cache_that_ignores_the_prompt(lively_tiny_model, monkeypatch):
    """What transformers 5.24 did to TransformerLens 4.3: attention never wrote to (or read) the cache."""
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    monkeypatch.setattr(AttentionBridge, "_update_kv_cache", lambda self, k, v, **kwargs: (k, v))
    with pytest.raises(lm.CachedDecodingError) as caught:
        lm.check_cached_decoding(lively_tiny_model, prompt=PROMPTS[0], max_new_tokens=12)
    message = str(caught.value)
    assert "\n" not in message
    versions = lm.installed_versions()
    assert f"transformers {versions['transformers']}" in message
    assert f"transformer-lens {versions['transformer-lens']}" in message
    assert "transformers>=5.9,<5.24" in message


def test_the_verified_range_is_the_one_pyproject_states():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    requirements = {req.split(">")[0].split("<")[0].strip(): req for req in pyproject["project"]["dependencies"]}
    for package, spec in lm.VERIFIED_VERSIONS.items():
        assert requirements[package] == package + spec


def test_the_lock_pins_versions_inside_the_verified_range():
    from pathlib import Path

    from packaging.specifiers import SpecifierSet

    lines = (Path(__file__).parents[1] / "constraints.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))
    for package, spec in lm.VERIFIED_VERSIONS.items():
        assert pins[package] in SpecifierSet(spec), f"constraints.txt pins {package}=={pins[package]}, outside {spec}"
    assert pins["torch"] == "2.13.0"


@pytest.mark.slow
@pytest.mark.parametrize("question", ["What is the capital of France?", "What is your physical form?",
                                      "Name three colours of the rainbow."])
def test_on_the_real_model_cached_greedy_chat_equals_uncached_for_32_tokens(real_model, question):
    tokens = lm.chat_tokens(real_model, question)
    cached = lm.generate(real_model, tokens, 32, stop_at_eos=False)[0].tolist()
    uncached = real_model.generate(tokens, max_new_tokens=32, do_sample=False, use_past_kv_cache=False,
                                   stop_at_eos=False, return_type="tokens", verbose=False)[0, tokens.shape[1]:]
    assert cached == uncached.tolist(), (real_model.tokenizer.decode(cached), real_model.tokenizer.decode(uncached))
