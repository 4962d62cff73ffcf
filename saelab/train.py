"""One command from a chat model to a shipped SAE: corpus -> harvest -> train -> evaluate -> files.

    python -m saelab.train --layer 15 --d-sae 9216 --k 32 --out saelab/assets/sae/...
    torchrun --standalone --nproc_per_node=2 -m saelab.train --model gpt2 --layer 6 --device cuda --out ...

Steps, each resumable or cheap to repeat: tokenise the offline corpus plus the written concept slices; harvest
the hook's activations into an on-disk store (resumes after an interruption); drop outlier tokens (norm above
``max_norm``); train a TopK SAE with ``train_sae``, streaming the store a few shards at a time
(:mod:`saelab.shards`, so the activations need not fit in RAM); evaluate on held-out rows (L0, FVU, dead
fraction, CE loss recovered); write the SAE (SAELens layout), ``metrics.json`` and a feature store for the
dashboard.

``--model`` takes the embedded default, a Hugging Face hub name or a local Hugging Face folder (anything
TransformerLens's bridge boots). Under torchrun every process harvests its own share of the corpus into its own
store and trains on it data-parallel (:mod:`saelab.distributed`); rank 0 alone evaluates and writes the files.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from saelab import concepts, corpus, distributed, lm
from saelab.feature_store import build_feature_store
from saelab.files import write_json_atomic
from saelab.harvest import collect_activations, harvest_to_store
from saelab.metrics import evaluate
from saelab.sae import SAE, SAEConfig
from saelab.shards import ShardBatches
from saelab.splice import ce_loss_recovered
from saelab.training import train_sae


@dataclass
class Recipe:
    """Everything that decides the shipped SAE; written into ``metrics.json`` so a result names its recipe."""

    model: str = lm.DEFAULT_MODEL
    """Model to read activations from: the embedded default, a Hugging Face hub name or a local model folder."""
    layer: int = 15
    """Block whose ``hook_resid_post`` the SAE reads."""
    sources: list[str] | None = None
    """Built-in corpus sources (None: all of ``saelab.corpus.SOURCES``)."""
    text_files: list[str] | None = None
    """Your own UTF-8 text files or folders of ``*.txt`` added to the corpus (the built-in one is ~2.1M tokens;
    a 100M-token run needs text of its own)."""
    concept_repeats: int = 1
    """How many times each concept passage enters the corpus (0 leaves the slices out)."""
    generated_slices: bool = False
    """Also mix in the passages the model wrote about each concept (``saelab.concept_generation``)."""
    max_tokens: int = 2_000_000
    """Tokens to tokenise (BOS included), held-out rows among them."""
    seq_len: int = 128
    """Tokens per row (context window of each forward pass)."""
    heldout_fraction: float = 0.02
    """Rows kept out of training for evaluation."""
    max_norm: float = 1000.0
    """Activations with a larger norm are dropped from training and evaluation: almost all are the
    ``<|endoftext|>`` separators between documents, attention sinks like BOS (~0.35% of tokens with the short
    concept passages mixed in)."""
    d_sae: int = 4608
    """Dictionary size."""
    k: int = 32
    """Active latents per token (TopK)."""
    matryoshka_groups: int = 1
    """With G > 1, nested prefixes of the dictionary must each reconstruct alone (see ``SAEConfig``)."""
    epochs: int = 1
    """Passes over the training activations."""
    batch_size: int = 4096
    """Rows per training step (all processes together; split evenly between them under torchrun)."""
    lr: float = 5e-4
    """Peak learning rate."""
    harvest_dtype: str = "float32"
    """Compute dtype of the harvest: ``float32``, or ``bfloat16`` (faster only on CPUs with AMX or on GPUs)."""
    save_dtype: str = "float32"
    """Dtype of the saved weights: ``float32`` or ``float16`` (half the file; metrics are measured after rounding)."""
    feature_store_rows: int = 2048
    """Corpus rows encoded into the feature store (top examples, densities) for the dashboard."""
    rows_per_shard: int = 1024
    """Token rows per harvest shard: training holds ``shard_window`` shards at a time."""
    shard_window: int = 2
    """Shards loaded and shuffled together while training (the memory bound)."""
    device: str = "cpu"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; under torchrun ``cuda`` means each process's own GPU."""
    train_dtype: str = "float32"
    """SAE training matmuls: ``float32``, or ``bfloat16`` under autocast (weights and Adam stay fp32)."""
    seed: int = 0
    """Seeds the corpus shuffle and the SAE's initialisation and batches."""
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("layer", "max_tokens", "seq_len", "d_sae", "k", "matryoshka_groups", "epochs", "batch_size",
                     "feature_store_rows", "rows_per_shard", "shard_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "layer" else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'layer' else 'positive'} integer, "
                                 f"got {value!r}")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if self.concept_repeats < 0:
            raise ValueError(f"concept_repeats must be >= 0, got {self.concept_repeats}")
        if self.harvest_dtype not in ("bfloat16", "float32"):
            raise ValueError(f"harvest_dtype must be 'bfloat16' or 'float32', got {self.harvest_dtype!r}")
        if self.train_dtype not in ("bfloat16", "float32"):
            raise ValueError(f"train_dtype must be 'bfloat16' or 'float32', got {self.train_dtype!r}")
        if self.device not in ("cpu", "cuda", "auto") and not re.fullmatch(r"cuda:\d+", self.device):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {self.device!r}")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model must be a model name or a local folder, got {self.model!r}")
        if self.save_dtype not in ("float16", "float32"):
            raise ValueError(f"save_dtype must be 'float16' or 'float32', got {self.save_dtype!r}")
        if not self.lr > 0 or not self.max_norm > 0:
            raise ValueError("lr and max_norm must be > 0")

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"


def build_tokens(model, recipe: Recipe, progress: bool = True) -> torch.Tensor:
    """The corpus with the concept slices mixed in, packed into rows and shuffled (seeded)."""
    texts = corpus.load_texts(recipe.sources, seed=recipe.seed)
    if recipe.text_files:
        texts += corpus.text_files(recipe.text_files)
    if recipe.concept_repeats:
        texts += concepts.all_passages(repeats=recipe.concept_repeats, generated=recipe.generated_slices)
    generator = torch.Generator().manual_seed(recipe.seed)
    texts = [texts[i] for i in torch.randperm(len(texts), generator=generator).tolist()]
    return corpus.tokenize_corpus(model, texts, seq_len=recipe.seq_len, max_tokens=recipe.max_tokens,
                                  progress=progress)


def _store_name(recipe: Recipe, n_rows: int) -> str:
    """A folder name for the harvest: the model's name made path-safe (a local folder by its last part + hash)."""
    name = recipe.model
    if "/" in name or "\\" in name:
        name = f"{Path(name).name}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return f"{name}-L{recipe.layer}-{n_rows}x{recipe.seq_len}-seed{recipe.seed}"


def run(recipe: Recipe, out: Path, work_dir: Path | None = None, progress: bool = True) -> dict:
    """Build the SAE described by ``recipe`` into ``out``; return the metrics written to ``out/metrics.json``.

    Under torchrun, joins the process group for the run; processes other than rank 0 return ``{}``."""
    device = distributed.local_device(recipe.device)
    joined = distributed.setup(device)
    try:
        return _run(recipe, Path(out), work_dir, progress and distributed.is_main(), device)
    finally:
        if joined:
            distributed.teardown()


def _run(recipe: Recipe, out: Path, work_dir: Path | None, progress: bool, device: torch.device) -> dict:
    started = time.perf_counter()
    main = distributed.is_main()
    if main:
        out.mkdir(parents=True, exist_ok=True)
    model = lm.load_model(recipe.model, device=device)
    tokens = build_tokens(model, recipe, progress)
    n_heldout = max(1, round(tokens.shape[0] * recipe.heldout_fraction))
    if tokens.shape[0] - n_heldout < 1:
        raise ValueError(f"the corpus packs into only {tokens.shape[0]} rows: too few to hold out {n_heldout}")
    train_tokens, heldout_tokens = tokens[:-n_heldout], tokens[-n_heldout:]

    work_dir = Path(work_dir) if work_dir is not None else lm.cache_dir() / "harvests"
    store_dir = work_dir / _store_name(recipe, tokens.shape[0])
    world = distributed.world_size()
    if world > 1:  # each process harvests its own share of the rows into its own store
        store_dir = store_dir / f"rank{distributed.rank()}of{world}"
    dtype = torch.bfloat16 if recipe.harvest_dtype == "bfloat16" else torch.float32
    harvest_started = time.perf_counter()
    store = harvest_to_store(model, recipe.hook_name, train_tokens[distributed.share(train_tokens.shape[0])],
                             dtype=dtype, out_dir=store_dir, rows_per_shard=recipe.rows_per_shard,
                             progress=progress, replace_different=True)
    harvest_seconds = time.perf_counter() - harvest_started
    stream = ShardBatches(store, distributed.check_divisible(recipe.batch_size), window=recipe.shard_window,
                          max_norm=recipe.max_norm, seed=recipe.seed)
    kept = stream.kept_rows(progress)
    n_rows, n_kept = distributed.total(stream.rows), distributed.total(kept)

    sae = SAE(SAEConfig(d_in=model.cfg.d_model, d_sae=recipe.d_sae, architecture="topk", k=recipe.k,
                        matryoshka_groups=recipe.matryoshka_groups, hook_name=recipe.hook_name,
                        model_name=recipe.model,
                        metadata={"hook_layer": recipe.layer, "context_size": recipe.seq_len, "prepend_bos": True}),
              seed=recipe.seed)
    history = train_sae(sae, stream, steps=recipe.epochs * stream.steps_per_epoch(kept), lr=recipe.lr,
                        seed=recipe.seed, progress=progress, device=device,
                        autocast_dtype=torch.bfloat16 if recipe.train_dtype == "bfloat16" else None)
    if not main:
        return {}
    save_dtype = getattr(torch, recipe.save_dtype)
    with torch.no_grad():  # evaluate exactly the weights that will be shipped
        for parameter in sae.parameters():
            parameter.copy_(parameter.to(save_dtype).float())

    heldout = collect_activations(model, recipe.hook_name, heldout_tokens, dtype=dtype, progress=False).float()
    heldout_kept = heldout[heldout.norm(dim=-1) <= recipe.max_norm]
    evaluation = evaluate(sae, heldout_kept)  # batch by batch on the SAE's device
    splice = ce_loss_recovered(model, sae, heldout_tokens[:64], progress=progress)
    # The feature store reads harvested activations, which come back on the CPU: the SAE goes there too.
    sae.cpu().save(out, dtype=save_dtype)

    store_rows = train_tokens[: recipe.feature_store_rows]
    build_feature_store(model, sae, store_rows, max_norm=recipe.max_norm,
                        progress=progress).save(out / "feature_store.safetensors")
    metrics = {
        **evaluation.as_dict(), **splice.as_dict(),
        "train_tokens": n_rows, "train_tokens_kept": n_kept,
        "outliers_dropped": n_rows - n_kept, "heldout_tokens": int(heldout_kept.shape[0]),
        "train_steps": history.steps, "train_rows_per_second": history.rows_per_second,
        "harvest_seconds": harvest_seconds, "wall_seconds": time.perf_counter() - started,
        "recipe": dataclasses.asdict(recipe),
        "command": shlex.join(["python", "-m", "saelab.train", *sys.argv[1:]]),
        "torch": torch.__version__, "processes": world, "device": str(device),
    }
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train an SAE on a chat model's residual stream, end to end.")
    defaults = Recipe()
    for f in dataclasses.fields(Recipe):
        if f.name in ("notes", "sources", "text_files"):
            continue
        flag, default = f"--{f.name.replace('_', '-')}", getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    parser.add_argument("--sources", nargs="*", default=None, help="built-in corpus sources (default: all)")
    parser.add_argument("--text-files", nargs="*", default=None, help="your own .txt files or folders to add")
    parser.add_argument("--out", type=Path, required=True, help="folder for the SAE, metrics.json, feature store")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the resumable harvest is kept")
    args = vars(parser.parse_args(argv))
    out, work_dir = args.pop("out"), args.pop("work_dir")
    metrics = run(Recipe(**args), out, work_dir)
    if metrics:
        print(json.dumps({k: v for k, v in metrics.items() if k != "recipe"}, indent=2))


if __name__ == "__main__":
    main()
