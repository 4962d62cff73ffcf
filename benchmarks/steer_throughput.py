"""Tokens per second of steered generation (one SAE feature clamped, error term kept) against unsteered generation,
and of the token-by-token stream against ``lm.generate``, same run.

Setting: the embedded SmolLM2-135M-Instruct, the chat prompt "What is your physical form?", greedy decoding with
the key/value cache on one decoding thread (``lm.generate``'s default), a fixed number of new tokens (no stop at
the end-of-turn token, so every case writes as many). The SAE is the shipped one at ``blocks.15.hook_resid_post``
when the package has it (the feature named "golden_gate", else the top search hit for "the Golden Gate Bridge"),
else a randomly initialised TopK SAE of the same shape (d_sae 9216, k 32) and the feature firing most on the
prompt; the feature is clamped at 1.5 x its max activation.

Cases, interleaved in each repeat (medians of tok/s and of the per-repeat ratios):
    generate            lm.generate, no hook
    generate steered    lm.generate with steer.clamp_hooks
    stream              streaming.stream_generate, no hook
    stream steered      the steering panel's path: stream_generate with the clamp and the feature's activation read
                        on every token

    python benchmarks/steer_throughput.py            # 5 repeats x 32 new tokens (a few minutes)
    python benchmarks/steer_throughput.py --quick    # 2 repeats x 8 new tokens, same code paths
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Callable

import torch

from saelab import lm, pretrained, steer, streaming
from saelab.features import feature_activations, search_features
from saelab.sae import SAE, SAEConfig

HOOK = "blocks.15.hook_resid_post"
PROMPT = "What is your physical form?"
MULTIPLE = 1.5


def benchmark_sae(model) -> tuple[SAE, int, float, str]:
    """The SAE, the feature to clamp, its max activation (NaN: measure it on the prompt) and where they came from."""
    if pretrained.list_pretrained():
        sae, store = pretrained.load_sae(), pretrained.load_feature_store()
        named = pretrained.named_features()
        if "golden_gate" in named:
            feature, how = int(named["golden_gate"]["feature"]), "named golden_gate"
        else:  # the feature that comes closest to its own max on the bridge's name
            feature, how = search_features(model, sae, store, "the Golden Gate Bridge", k=1)[0][0], "top search hit"
        return (sae, feature, float(store.max_activation[feature]),
                f"shipped SAE {pretrained.DEFAULT}, feature {feature} ({how} for the Golden Gate Bridge)")
    sae = SAE(SAEConfig(d_in=576, d_sae=9216, architecture="topk", k=32, metadata={"hook_name": HOOK}), seed=0)
    return sae, -1, float("nan"), "random-init TopK SAE (d_sae 9216, k 32; no shipped SAE yet)"


def measure(model, sae: SAE, feature: int, value: float, prompt: torch.Tensor, new_tokens: int,
            repeats: int) -> dict:
    """Time the four cases, interleaved, ``repeats`` times after one warm-up; medians and same-repeat ratios."""
    clamp = steer.clamp_hooks(model, sae, {feature: value})

    def rate(run: Callable[[], list[int]]) -> Callable[[], float]:
        def timed() -> float:
            start = time.perf_counter()
            written = run()
            seconds = time.perf_counter() - start
            assert len(written) == new_tokens, f"wrote {len(written)} tokens, expected {new_tokens}"
            return new_tokens / seconds
        return timed

    cases = {
        "generate": rate(lambda: lm.generate(model, prompt, new_tokens, stop_at_eos=False)[0].tolist()),
        "generate steered": rate(lambda: lm.generate(model, prompt, new_tokens, fwd_hooks=clamp,
                                                     stop_at_eos=False)[0].tolist()),
        "stream": rate(lambda: [s.token for s in streaming.stream_generate(model, prompt, new_tokens,
                                                                           stop_at_eos=False)]),
        "stream steered": rate(lambda: [s.token for s in streaming.stream_generate(
            model, prompt, new_tokens, fwd_hooks=clamp, sae=sae, feature=feature, stop_at_eos=False)]),
    }
    for run in cases.values():  # warm-up: first calls allocate
        run()
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            rates[name].append(run())
    ratio = lambda a, b: statistics.median(x / y for x, y in zip(rates[a], rates[b]))
    return {
        "tok_s": {name: statistics.median(values) for name, values in rates.items()},
        "steered_vs_unsteered": ratio("generate steered", "generate"),
        "stream_vs_generate": ratio("stream", "generate"),
        "stream_steered_vs_generate_steered": ratio("stream steered", "generate steered"),
        "new_tokens": new_tokens, "repeats": repeats,
    }


def hook_cost(model, sae: SAE, feature: int, value: float, repeats: int = 200) -> dict:
    """Milliseconds of one clamp-hook call at one position (a decoding step's share) and of one decoding step."""
    hook = steer.clamp_hooks(model, sae, {feature: value})[0][1]
    x = torch.randn(1, 1, sae.cfg.d_in) * 170
    with lm.torch_threads(1), torch.no_grad():
        for _ in range(10):
            hook(x, None)
        start = time.perf_counter()
        for _ in range(repeats):
            hook(x, None)
        per_call = (time.perf_counter() - start) / repeats
    return {"clamp_hook_ms_per_position": 1000 * per_call}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats x 8 new tokens")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 5, quick 2)")
    parser.add_argument("--new-tokens", type=int, help="new tokens per generation (default 32, quick 8)")
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    new_tokens = args.new_tokens or (8 if args.quick else 32)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads (decoding on 1), load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    model = lm.load_model()
    sae, feature, top, source = benchmark_sae(model)
    prompt = lm.chat_tokens(model, PROMPT)
    if feature < 0:  # random SAE: the feature firing most strongly on the prompt, at its largest value there
        acts = feature_activations(model, sae, prompt, hook_name=HOOK)[0, 1:]
        feature = int(acts.max(0).values.argmax())
        top = float(acts[:, feature].max())
        source += f", feature {feature} (max on the prompt {top:.1f})"
    value = MULTIPLE * top
    print(f"SAE: {source}; clamp value {value:.2f} ({MULTIPLE} x max)", flush=True)
    result = measure(model, sae, feature, value, prompt, new_tokens, repeats)
    result.update(hook_cost(model, sae, feature, value), sae=source, load_average=os.getloadavg()[0])
    for name, tok_s in result["tok_s"].items():
        print(f"{name:<18} {tok_s:6.2f} tok/s", flush=True)
    print(f"steered / unsteered (lm.generate): {result['steered_vs_unsteered']:.2f}  (target >= 0.8)")
    print(f"stream / lm.generate:              {result['stream_vs_generate']:.2f}")
    print(f"stream steered + read / generate steered: {result['stream_steered_vs_generate_steered']:.2f}")
    print(f"clamp hook at one position: {result['clamp_hook_ms_per_position']:.2f} ms; one decoding step at the "
          f"unsteered rate: {1000 / result['tok_s']['generate']:.1f} ms")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
