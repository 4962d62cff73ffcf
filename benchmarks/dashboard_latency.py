"""Feature dashboard latency on the embedded model: first render and feature switch.

Figures (one run; medians and maxima over features, each feature shown for the first time):
- first render: seconds for ``feature_dashboard(model, sae, store, feature)`` to return, every panel computed
  and the histogram figure built (target < 2 s); the first dashboard of the process ("cold") is reported apart,
  after timing the one-off import of plotly's widget stack that any ``go.FigureWidget`` pays once per kernel;
- feature switch: seconds from setting ``dashboard.feature.value`` to every panel redrawn (target < 1 s);
- top examples: ``features.top_contexts`` (8 examples) answered from the store's windows, and by the model in one
  batched forward pass (a store without windows), each against the plain way — one forward pass per example,
  as the dashboard did before — as same-run ratios, with the largest difference between their activations.

SAE and store: the shipped ones (``saelab.pretrained``) when present, else (or with ``--random-sae``) a randomly
initialised TopK SAE (d_sae 9216, k 32) at blocks.15.hook_resid_post with a store built here over ``--rows``
rows of 128 tokens. A store saved without context windows is rebuilt with them over its own tokens. Built stores
are cached in ``--cache``.

    python benchmarks/dashboard_latency.py            # 10 features per figure, 5 for the ratios
    python benchmarks/dashboard_latency.py --quick    # 3 features, 2 for the ratios, 256-row random store
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import random
import statistics
import time
from pathlib import Path

import plotly.graph_objects as go
import torch

from saelab import corpus, features, lm, pretrained
from saelab.feature_store import FeatureStore
from saelab.features import Context
from saelab.sae import SAE, SAEConfig
from saelab.widgets import feature_dashboard

HOOK = "blocks.15.hook_resid_post"
N_EXAMPLES = 8  # what the dashboard shows


def plain_top_contexts(model, sae, store: FeatureStore, feature: int, n: int, before: int = 12, after: int = 4
                       ) -> list[Context]:
    """The reference: for each example, run its row's prefix through the model and encode every position."""
    seq_len = store.tokens.shape[1]
    contexts = []
    for value, flat in zip(store.top_values[feature, :n].tolist(), store.top_index[feature, :n].tolist()):
        if flat < 0:
            break
        row, pos = divmod(flat, seq_len)
        first, last = max(1, pos - before), min(seq_len, pos + after + 1)
        window = store.tokens[row:row + 1, :last]
        acts = features.feature_activations(model, sae, window, hook_name=store.hook_name)[0, :, feature]
        contexts.append(Context(tokens=model.to_str_tokens(window[0, first:last]),
                                activations=acts[first:last].tolist(), peak=pos - first, value=value))
    return contexts


def random_sae_and_store(model, rows: int, cache: Path) -> tuple[SAE, FeatureStore, str]:
    sae = SAE(SAEConfig(d_in=576, d_sae=9216, architecture="topk", k=32, metadata={"hook_name": HOOK}), seed=0).eval()
    path = cache / f"dashboard-random-topk9216-{rows}x128.safetensors"
    if path.is_file():
        store = FeatureStore.load(path)
    else:
        texts = corpus.load_texts(max_texts_per_source=200, seed=0)
        tokens = corpus.tokenize_corpus(model, texts, seq_len=128, max_tokens=128 * rows, progress=False)
        store = features.build_feature_store(model, sae, tokens, hook_name=HOOK, max_norm=1000.0)
        store.save(path)
    return sae, store, f"random TopK SAE (d_sae 9216, k 32), store {store.tokens.shape[0]} x 128 tokens built here"


def shipped_sae_and_store(model, cache: Path) -> tuple[SAE, FeatureStore, str]:
    sae, store = pretrained.load_sae(), pretrained.load_feature_store()
    about = f"shipped SAE {pretrained.DEFAULT} (d_sae {sae.cfg.d_sae}), store {tuple(store.tokens.shape)} tokens"
    if store.context_activations is None:
        path = cache / f"dashboard-shipped-{store.tokens.shape[0]}x{store.tokens.shape[1]}.safetensors"
        if path.is_file():
            rebuilt = FeatureStore.load(path)
        else:
            print("the shipped store has no context windows: rebuilding it with them over its own tokens", flush=True)
            start = time.perf_counter()
            rebuilt = features.build_feature_store(model, sae, store.tokens, hook_name=store.hook_name,
                                                   n_top=store.top_values.shape[1], max_norm=store.metadata["max_norm"])
            print(f"rebuilt in {time.perf_counter() - start:.0f} s", flush=True)
            rebuilt.save(path)
        print(f"rebuilt store vs shipped: top values equal to {(rebuilt.top_values - store.top_values).abs().max():.2g}, "
              f"same positions for {(rebuilt.top_index == store.top_index).float().mean():.4%}", flush=True)
        store, about = rebuilt, about + " (rebuilt with context windows)"
    return sae, store, about


def timed(call):
    """``(call(), seconds it took)``."""
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def seconds(call) -> float:
    return timed(call)[1]


def summary(name: str, values: list[float], target: float | None = None) -> str:
    line = f"{name:<44} median {statistics.median(values):7.3f} s   max {max(values):7.3f} s   (n={len(values)})"
    return line + (f"   target < {target:g} s" if target else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer features, a smaller random store")
    parser.add_argument("--random-sae", action="store_true", help="a random SAE even when a shipped one exists")
    parser.add_argument("--rows", type=int, help="rows of the random SAE's store (default 2048, quick 256)")
    parser.add_argument("--features", type=int, help="features timed per figure (default 10, quick 3)")
    parser.add_argument("--ratio-features", type=int, help="features for the top_contexts ratios (default 5, quick 2)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/saelab-benchmarks"), help="folder for built stores")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_features = args.features or (3 if args.quick else 10)
    n_ratio = args.ratio_features or (2 if args.quick else 5)
    rows = args.rows or (256 if args.quick else 2048)
    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    start = time.perf_counter()
    model = lm.load_model()
    print(f"load_model: {time.perf_counter() - start:.1f} s", flush=True)
    if pretrained.list_pretrained() and not args.random_sae:
        sae, store, about = shipped_sae_and_store(model, args.cache)
    else:
        sae, store, about = random_sae_and_store(model, rows, args.cache)
    print(about, flush=True)

    firing = (store.top_index[:, N_EXAMPLES - 1] >= 0).nonzero().flatten().tolist()
    chosen = random.Random(0).sample(firing, 2 * n_features + n_ratio + 1)
    cold, render_ids, switch_ids = chosen[0], chosen[1:1 + n_features], chosen[1 + n_features:1 + 2 * n_features]
    ratio_ids = chosen[1 + 2 * n_features:]

    import_s = seconds(lambda: go.FigureWidget)  # plotly imports its widget class (and nbformat, jsonschema) lazily
    print(f"import of plotly's FigureWidget stack, once per kernel: {import_s:.3f} s", flush=True)
    cold_s = seconds(lambda: feature_dashboard(model, sae, store, cold))
    print(f"first render, cold (first dashboard of the process): {cold_s:.3f} s", flush=True)
    render = [seconds(lambda f=f: feature_dashboard(model, sae, store, f)) for f in render_ids]
    print(summary("first render (new dashboard per feature)", render, 2.0), flush=True)
    dashboard = feature_dashboard(model, sae, store, render_ids[0])
    switch = []
    for f in switch_ids:
        switch.append(seconds(lambda f=f: setattr(dashboard.feature, "value", f)))
        assert f"feature {f}</b>" in dashboard.stats.value
    print(summary("feature switch (to a feature not shown before)", switch, 1.0), flush=True)
    back = [seconds(lambda f=f: setattr(dashboard.feature, "value", f)) for f in switch_ids]
    print(summary("feature switch back (panels kept)", back), flush=True)

    without_windows = dataclasses.replace(store, context_activations=None)
    stored_s, live_s, plain_s, stored_ratio, live_ratio, differences = [], [], [], [], [], []
    for f in ratio_ids:  # interleaved, so load swings hit all three alike
        plain, plain_t = timed(lambda f=f: plain_top_contexts(model, sae, store, f, N_EXAMPLES))
        stored, stored_t = timed(lambda f=f: features.top_contexts(model, sae, store, f, N_EXAMPLES))
        live, live_t = timed(lambda f=f: features.top_contexts(model, sae, without_windows, f, N_EXAMPLES))
        plain_s.append(plain_t), stored_s.append(stored_t), live_s.append(live_t)
        stored_ratio.append(plain_t / stored_t), live_ratio.append(plain_t / live_t)
        for ours in (stored, live):
            assert [c.tokens for c in ours] == [c.tokens for c in plain]
            differences += [abs(a - b) for c, p in zip(ours, plain) for a, b in zip(c.activations, p.activations)]
    print(summary("top_contexts: one forward pass per example", plain_s), flush=True)
    print(summary("top_contexts: one batched forward pass", live_s), flush=True)
    print(summary("top_contexts: from the store's windows", stored_s), flush=True)
    print(f"speed-up over one pass per example (median of same-feature ratios): batched x{statistics.median(live_ratio):.1f}, "
          f"stored windows x{statistics.median(stored_ratio):.0f}; largest activation difference {max(differences):.1e}",
          flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
