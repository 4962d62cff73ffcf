"""Token-by-token generation: lm.generate's tokens, feature activations read in the same pass, and a model left
exactly as it was between tokens, after an error and after a dropped stream."""


import pytest
import torch

from saelab import lm, steer, streaming
from saelab.features import feature_activations
from saelab.sae import SAE, SAEConfig

HOOK = "blocks.2.hook_resid_post"
PROMPT = "What is your physical form?"



@pytest.fixture(scope="module")
def sae():
    return SAE(SAEConfig(d_in=32, d_sae=64, architecture="topk", k=4, hook_name=HOOK), seed=0)


@pytest.fixture(scope="module")
def prompt(tiny_model):
    return lm.chat_tokens(tiny_model, PROMPT)


def tokens_of(stream) -> list[int]:
    return [step.token for step in stream]


def test_greedy_and_seeded_streams_give_lm_generates_tokens_with_and_without_a_clamp(tiny_model, sae, prompt):
    clamp = steer.clamp_hooks(tiny_model, sae, {7: 50.0})
    for hooks in ([], clamp):
        expected = lm.generate(tiny_model, prompt, 20, fwd_hooks=hooks)[0].tolist()
        assert tokens_of(streaming.stream_generate(tiny_model, prompt, 20, fwd_hooks=hooks)) == expected
        for seed in (1, 2):
            sampled = lm.generate(tiny_model, prompt, 20, temperature=1.0, seed=seed, fwd_hooks=hooks)[0].tolist()
            assert tokens_of(streaming.stream_generate(tiny_model, prompt, 20, temperature=1.0, seed=seed,
                                                       fwd_hooks=hooks)) == sampled
    steered = tokens_of(streaming.stream_generate(tiny_model, prompt, 20, temperature=1.0, seed=1, fwd_hooks=clamp))
    plain = tokens_of(streaming.stream_generate(tiny_model, prompt, 20, temperature=1.0, seed=1))
    assert steered != plain  # the clamp really acts on the generated tokens
    assert not lm.active_hook_points(tiny_model)


def test_the_text_pieces_join_into_lm_chats_reply(tiny_model):
    steps = list(streaming.stream_chat(tiny_model, PROMPT, 20, temperature=1.0, seed=4))
    assert streaming.reply_text(steps) == lm.chat(tiny_model, PROMPT, 20, temperature=1.0, seed=4)
    assert all(step.activation is None for step in steps)


def test_reported_activations_are_the_features_activation_on_each_generated_token(tiny_model, sae, prompt):
    untracked = tokens_of(streaming.stream_generate(tiny_model, prompt, 16, temperature=1.0, seed=0))
    full = torch.cat([prompt, torch.tensor([untracked])], dim=1)
    # A fresh full-sequence pass without any cache gives the numbers to expect at the generated positions.
    generated = feature_activations(tiny_model, sae, full, hook_name=HOOK)[0, prompt.shape[1]:]
    feature = int((generated > 0).sum(0).argmax())  # the feature firing on most generated tokens
    steps = list(streaming.stream_generate(tiny_model, prompt, 16, temperature=1.0, seed=0, sae=sae,
                                           feature=feature))
    assert [s.token for s in steps] == untracked  # reading changes nothing
    assert torch.allclose(torch.tensor([s.activation for s in steps]), generated[:, feature], atol=1e-4)
    assert (generated[:, feature] > 0).sum() >= 3  # the check compares numbers, not zeros

    # Steered: the activation as the model computed it, before the clamp overwrote it.
    clamp = steer.clamp_hooks(tiny_model, sae, {feature: 25.0})
    steps = list(streaming.stream_generate(tiny_model, prompt, 16, temperature=1.0, seed=0, sae=sae,
                                           feature=feature, fwd_hooks=clamp))
    full = torch.cat([prompt, torch.tensor([[s.token for s in steps]])], dim=1)
    before_clamp = []
    reader = (HOOK, lambda act, hook: before_clamp.append(sae.encode(act[0].float())[:, feature]))
    with torch.no_grad():
        tiny_model.run_with_hooks(full, fwd_hooks=[reader] + clamp)
    assert torch.allclose(torch.tensor([s.activation for s in steps]), before_clamp[0][prompt.shape[1]:], atol=1e-4)


def test_a_stream_stops_after_the_end_of_turn_token_as_lm_generate_does(tiny_model, prompt, monkeypatch):
    first = lm.generate(tiny_model, prompt, 1)[0, 0].item()
    monkeypatch.setattr(tiny_model.cfg, "eos_token_id", first)  # make the first greedy token the end of turn
    assert tokens_of(streaming.stream_generate(tiny_model, prompt, 10)) == [first]
    assert lm.generate(tiny_model, prompt, 10)[0].tolist() == [first]
    assert len(tokens_of(streaming.stream_generate(tiny_model, prompt, 10, stop_at_eos=False))) == 10


def test_between_tokens_no_hook_thread_setting_or_no_grad_mode_is_left_on(tiny_model, sae, prompt):
    threads = torch.get_num_threads()
    stream = streaming.stream_generate(tiny_model, prompt, 6, fwd_hooks=steer.clamp_hooks(tiny_model, sae, {3: 9.0}),
                                       sae=sae, feature=3, threads=1)
    for _ in stream:
        assert not lm.active_hook_points(tiny_model)
        assert torch.is_grad_enabled() and torch.get_num_threads() == threads
        torch.rand(5)  # the caller drawing random numbers between tokens changes no sampled token


def test_interleaved_streams_and_random_draws_between_tokens_change_no_token(tiny_model, sae, prompt):
    alone = tokens_of(streaming.stream_generate(tiny_model, prompt, 12, temperature=1.0, seed=5))
    a = streaming.stream_generate(tiny_model, prompt, 12, temperature=1.0, seed=5)
    b = streaming.stream_generate(tiny_model, prompt, 12, temperature=1.0, seed=6,
                                  fwd_hooks=steer.clamp_hooks(tiny_model, sae, {3: 9.0}))
    interleaved = []
    for step_a, _ in zip(a, b):
        interleaved.append(step_a.token)
        torch.rand(100)
    assert interleaved == alone


def test_hooks_are_gone_after_an_error_midway_and_after_a_dropped_stream(tiny_model, sae, prompt):
    calls = []

    def fails_on_third_pass(act, hook):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")

    stream = streaming.stream_generate(tiny_model, prompt, 10, fwd_hooks=[(HOOK, fails_on_third_pass)],
                                       sae=sae, feature=1)
    with pytest.raises(RuntimeError, match="boom"):
        list(stream)
    assert not lm.active_hook_points(tiny_model) and torch.is_grad_enabled()

    stream = streaming.stream_generate(tiny_model, prompt, 10, fwd_hooks=steer.clamp_hooks(tiny_model, sae, {1: 4.0}))
    next(stream), next(stream)
    del stream
    assert not lm.active_hook_points(tiny_model)
    assert lm.generate(tiny_model, prompt, 3).shape == (1, 3)  # the model still generates normally


def test_bad_stream_requests_are_refused_at_the_call_in_one_line(tiny_model, sae, prompt):
    other_hook = SAE(SAEConfig(d_in=32, d_sae=8, hook_name="blocks.1.hook_resid_post"), seed=0)
    cases = [
        (dict(tokens=prompt.repeat(2, 1)), "tokens must be a (1, pos) torch.long tensor"),
        (dict(max_new_tokens=0), "max_new_tokens must be an integer >= 1"),
        (dict(max_new_tokens=60), "exceeds the model's context n_ctx=64"),
        (dict(temperature=float("nan")), "temperature must be a finite number >= 0"),
        (dict(temperature=-1.0), "temperature must be a finite number >= 0"),
        (dict(sae=sae), "give both sae and feature"),
        (dict(sae=sae, feature=64), "feature must be an integer in 0..63"),
        (dict(sae=other_hook, feature=0, hook_name=HOOK), "trained on 'blocks.1"),
    ]
    for overrides, message in cases:
        arguments = dict(tokens=prompt, max_new_tokens=4) | overrides
        with pytest.raises(ValueError) as error:
            streaming.stream_generate(tiny_model, arguments.pop("tokens"), arguments.pop("max_new_tokens"),
                                      **arguments)
        assert message in str(error.value) and "\n" not in str(error.value)
    assert not lm.active_hook_points(tiny_model)


@pytest.mark.slow
def test_on_the_real_model_greedy_streams_match_lm_generate_with_and_without_a_clamp(real_model):
    hook = "blocks.15.hook_resid_post"
    sae = SAE(SAEConfig(d_in=576, d_sae=1024, architecture="topk", k=16, hook_name=hook), seed=0)
    prompt = lm.chat_tokens(real_model, PROMPT)
    acts = feature_activations(real_model, sae, prompt, hook_name=hook)[0, 1:]
    feature = int(acts.max(0).values.argmax())
    for hooks in ([], steer.clamp_hooks(real_model, sae, {feature: 3.0 * float(acts[:, feature].max())})):
        expected = lm.generate(real_model, prompt, 12, fwd_hooks=hooks)[0].tolist()
        got = list(streaming.stream_generate(real_model, prompt, 12, fwd_hooks=hooks, sae=sae, feature=feature))
        assert [s.token for s in got] == expected
        assert real_model.tokenizer.decode(expected, skip_special_tokens=True) == "".join(s.text for s in got)
    assert not lm.active_hook_points(real_model)


def test_the_steering_benchmarks_measuring_function_times_every_case_on_the_tiny_model(tiny_model, sae, prompt):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "benchmarks" / "steer_throughput.py"
    spec = importlib.util.spec_from_file_location("steer_throughput", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.measure(tiny_model, sae, feature=3, value=9.0, prompt=prompt, new_tokens=4, repeats=1)
    rates = result["tok_s"]
    assert set(rates) == {"generate", "generate steered", "stream", "stream steered"}
    assert all(rate > 0 for rate in rates.values())
    # One repeat: each ratio is the quotient of that repeat's rates.
    assert result["steered_vs_unsteered"] == pytest.approx(rates["generate steered"] / rates["generate"])
    assert result["stream_vs_generate"] == pytest.approx(rates["stream"] / rates["generate"])
    assert bench.hook_cost(tiny_model, sae, 3, 9.0, repeats=5)["clamp_hook_ms_per_position"] > 0
    assert not lm.active_hook_points(tiny_model)
