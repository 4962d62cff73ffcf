"""Tokens per second of ``saelab.harvest.collect_activations`` against plain transformers, same run; and
greedy generation tokens per second with the key/value cache.

Harvest setting: the embedded SmolLM2-135M-Instruct, ``blocks.15.hook_resid_post``, rows of 128 tokens, batch 16.
The reference is what a careful person would write with plain transformers: the same weights with the decoder
cut to 16 layers and its final norm made the identity, ``model.model(tokens, output_hidden_states=True)`` under ``torch.inference_mode`` (no LM head).
bf16: both run the fp32 weights under ``torch.autocast(bfloat16)``; "bf16 weights" loads both in bfloat16.
Generation: ``lm.chat``'s path (``lm.generate``: the bridge's ``generate`` with KV cache, greedy, one thread)
against ``transformers.generate`` (greedy, KV cache) with torch's default threads and with one thread; the same
prompt and the same number of new tokens.
Ours and the reference are interleaved in each repeat; medians of tok/s and of the per-repeat ratios.

    python benchmarks/harvest_throughput.py            # full run (a few minutes)
    python benchmarks/harvest_throughput.py --quick    # fewer rows and repeats, same code paths
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time

import torch

from saelab import corpus, harvest, lm
from saelab.threads import torch_threads

LAYER = 15
HOOK = f"blocks.{LAYER}.hook_resid_post"


def plain_truncated(dtype: torch.dtype):
    hf_model, _ = lm.load_default_hf(dtype=dtype)
    hf_model.model.layers = hf_model.model.layers[: LAYER + 1]
    hf_model.config.num_hidden_layers = LAYER + 1
    # The last hidden state transformers returns is after the final norm; the residual stream is before it.
    hf_model.model.norm = torch.nn.Identity()
    return hf_model


def time_ours(model, tokens, dtype, batch_size) -> float:
    start = time.perf_counter()
    harvest.collect_activations(model, HOOK, tokens, batch_size=batch_size, dtype=dtype, progress=False)
    return tokens.numel() / (time.perf_counter() - start)


def time_plain(hf_model, tokens, autocast_dtype, batch_size) -> float:
    keep = []
    start = time.perf_counter()
    context = (torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype is not None
               else contextlib.nullcontext())
    with torch.inference_mode(), context:
        for first in range(0, tokens.shape[0], batch_size):
            out = hf_model.model(tokens[first:first + batch_size], output_hidden_states=True)
            keep.append(out.hidden_states[LAYER + 1][:, 1:].reshape(-1, out.hidden_states[0].shape[-1]).cpu())
    torch.cat(keep)
    return tokens.numel() / (time.perf_counter() - start)


def compare(name, ours, plain, repeats):
    ours(), plain()  # warm-up (first calls allocate)
    rates_ours, rates_plain, ratios = [], [], []
    for _ in range(repeats):
        a, b = ours(), plain()
        rates_ours.append(a), rates_plain.append(b), ratios.append(a / b)
    row = {"case": name, "ours_tok_s": statistics.median(rates_ours), "plain_tok_s": statistics.median(rates_plain),
           "ratio": statistics.median(ratios), "repeats": repeats}
    print(f"{name:<28} ours {row['ours_tok_s']:8.1f} tok/s   plain {row['plain_tok_s']:8.1f} tok/s   "
          f"ratio {row['ratio']:.2f}", flush=True)
    return row


def generation(model, hf_model, new_tokens, repeats):
    prompt = lm.chat_tokens(model, "What is your physical form?")

    def ours():
        start = time.perf_counter()
        lm.generate(model, prompt, max_new_tokens=new_tokens, stop_at_eos=False)  # lm.chat's path
        return new_tokens / (time.perf_counter() - start)

    def plain(threads):
        def run():
            with torch_threads(threads), torch.inference_mode():
                start = time.perf_counter()
                hf_model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                  use_cache=True)
                return new_tokens / (time.perf_counter() - start)
        return run

    threads = torch.get_num_threads()
    return [compare(f"generate {new_tokens} tok vs HF ({threads} thr)", ours, plain(threads), repeats),
            compare(f"generate {new_tokens} tok vs HF (1 thr)", ours, plain(1), repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and repeats")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--repeats", type=int, help="interleaved repeats per case (default 3 quick, 5 full)")
    parser.add_argument("--cases", default="fp32,bf16,bf16-weights,generate",
                        help="comma-separated subset of: fp32, bf16, bf16-weights, generate")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows_n, repeats, batch_size, new_tokens = (8, 3, 8, 8) if args.quick else (32, 5, 16, 32)
    repeats = args.repeats or repeats
    cases = set(args.cases.split(","))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {'quick' if args.quick else 'full'} run, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    start = time.perf_counter()
    model = lm.load_model()
    print(f"load_model: {time.perf_counter() - start:.1f} s", flush=True)
    texts = corpus.load_texts(max_texts_per_source=40, seed=0)
    tokens = corpus.tokenize_corpus(model, texts, seq_len=128, max_tokens=128 * rows_n, progress=False)
    results = []

    plain32 = plain_truncated(torch.float32)
    ours_out = harvest.collect_activations(model, HOOK, tokens[:2], progress=False)
    with torch.inference_mode():
        plain_out = plain32.model(tokens[:2], output_hidden_states=True).hidden_states[LAYER + 1][:, 1:]
    print("same activations as plain transformers:",
          torch.allclose(ours_out, plain_out.reshape(ours_out.shape), rtol=1e-4, atol=1e-3), flush=True)

    if "fp32" in cases:
        results.append(compare("harvest fp32", lambda: time_ours(model, tokens, None, batch_size),
                               lambda: time_plain(plain32, tokens, None, batch_size), repeats))
    if "bf16" in cases:
        results.append(compare("harvest bf16 (autocast)",
                               lambda: time_ours(model, tokens, torch.bfloat16, batch_size),
                               lambda: time_plain(plain32, tokens, torch.bfloat16, batch_size), repeats))
    del plain32
    if "bf16-weights" in cases:
        bf16_model = lm.load_model(dtype=torch.bfloat16)
        plain16 = plain_truncated(torch.bfloat16)
        results.append(compare("harvest bf16 weights", lambda: time_ours(bf16_model, tokens, None, batch_size),
                               lambda: time_plain(plain16, tokens, None, batch_size), repeats))
        del bf16_model, plain16
    if "generate" in cases:
        hf_full, _ = lm.load_default_hf()
        results.extend(generation(model, hf_full, new_tokens, repeats))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)


if __name__ == "__main__":
    main()
