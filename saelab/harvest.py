"""Harvest one hook point's activations over a token corpus, in memory or into an on-disk shard store.

``collect_activations`` stops the forward pass right after the hooked layer (``stop_at_layer``), runs under
``torch.inference_mode``, keeps only the hooked tensor and drops position 0 (the BOS attention sink, see
:mod:`saelab.corpus`), and returns one tensor. ``harvest_to_store`` streams the same activations to
``ActivationStore`` shards instead of RAM:

    out_dir/metadata.json          what was harvested, from which tokens, and which shards are finished
    out_dir/shard_00000.safetensors  one tensor "activations" of shape (rows, d_model), read memory-mapped

Each shard is written to a temporary file and renamed into place, then recorded in metadata.json (also
written atomically), so an interrupted harvest loses at most the shard it was writing; calling
``harvest_to_store`` again with the same arguments resumes after the last finished shard.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
from jaxtyping import Float, Int
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from saelab.files import write_atomic, write_json_atomic

_LAYER = re.compile(r"^blocks\.(\d+)\.")
_FORMAT = "saelab-activations-v1"


def check_hook_name(model, hook_name: str) -> int | None:
    """Validate ``hook_name``; return its block index (None for hooks outside the blocks)."""
    if hook_name not in model.hook_dict:
        match = _LAYER.match(hook_name)
        if match and int(match.group(1)) >= model.cfg.n_layers:
            raise ValueError(f"hook_name={hook_name!r}: layer {match.group(1)} is beyond the model's "
                             f"{model.cfg.n_layers} layers (0..{model.cfg.n_layers - 1})")
        near = difflib.get_close_matches(hook_name, list(model.hook_dict), n=5, cutoff=0.5)
        raise ValueError(f"hook_name={hook_name!r} is not a hook point of this model; nearest: {near}")
    match = _LAYER.match(hook_name)
    return int(match.group(1)) if match else None


def check_tokens(model, tokens: Tensor) -> None:
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.dtype != torch.long:
        raise ValueError("tokens must be a (batch, pos) torch.long tensor, e.g. from saelab.corpus.tokenize_corpus")
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(f"tokens is empty (shape {tuple(tokens.shape)}): nothing to harvest")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"tokens has sequences of {tokens.shape[1]} tokens, longer than the model's context "
                         f"n_ctx={model.cfg.n_ctx}")
    if int(tokens.max()) >= model.cfg.d_vocab or int(tokens.min()) < 0:
        raise ValueError(f"tokens holds ids outside the vocabulary 0..{model.cfg.d_vocab - 1}")


@contextlib.contextmanager
def _compute_dtype(model, dtype: torch.dtype | None):
    """Run the block under bf16/fp16 autocast when asked for a dtype lower than the model's weights."""
    weights = next(model.parameters()).dtype
    if dtype is None or dtype == weights or dtype == torch.float32:
        yield
        return
    device_type = next(model.parameters()).device.type
    with torch.autocast(device_type=device_type, dtype=dtype):
        yield


def _forward_batches(model, hook_name: str, tokens: Tensor, batch_size: int, dtype, drop_bos: bool,
                     progress: bool, desc: str) -> Iterator[Float[Tensor, "rows d_model"]]:
    """Yield the hooked activations of each batch of rows, flattened to (rows * pos, d_model)."""
    layer = check_hook_name(model, hook_name)
    stop_at_layer = None if layer is None else layer + 1
    kept: list[Tensor] = []

    def keep(activation, hook):
        kept.append(activation)
        return activation

    bar = tqdm(total=tokens.numel(), desc=desc, unit="tok", unit_scale=True, disable=not progress)
    with torch.inference_mode(), _compute_dtype(model, dtype):
        for start in range(0, tokens.shape[0], batch_size):
            batch = tokens[start:start + batch_size].to(model.cfg.device)
            model.run_with_hooks(batch, fwd_hooks=[(hook_name, keep)], stop_at_layer=stop_at_layer,
                                 return_type=None)
            activation = kept.pop()
            kept.clear()
            if drop_bos:
                activation = activation[:, 1:]
            out_dtype = dtype if dtype is not None else activation.dtype
            yield activation.reshape(-1, activation.shape[-1]).to("cpu", out_dtype)
            bar.update(batch.numel())
    bar.close()


def _check_harvest_args(model, hook_name: str, tokens: Tensor, batch_size: int, dtype) -> None:
    check_tokens(model, tokens)
    check_hook_name(model, hook_name)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if dtype is not None and dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype={dtype!r}: use None, torch.float32, torch.bfloat16 or torch.float16")


def collect_activations(
    model,
    hook_name: str,
    tokens: Int[Tensor, "batch pos"],
    batch_size: int = 16,
    dtype: torch.dtype | None = None,
    progress: bool = True,
    drop_bos: bool = True,
    out_dir: str | Path | None = None,
    rows_per_shard: int = 1024,
    replace_different: bool = False,
) -> Float[Tensor, "n_tokens d_model"]:
    """Activations at ``hook_name`` for every token of ``tokens`` (position 0 dropped unless ``drop_bos=False``).

    Args:
        hook_name: a hook point, e.g. ``"blocks.15.hook_resid_post"``; the forward pass stops after its layer.
        dtype: compute and keep the activations in this dtype (``torch.bfloat16`` runs the matrix products
            under autocast and halves the memory; whether it is faster depends on the CPU); default: the
            model's dtype.
        out_dir, rows_per_shard, replace_different: deprecated; use ``harvest_to_store``, which returns the
            on-disk ``ActivationStore``.
    Returns:
        a ``(n_tokens, d_model)`` tensor, rows in token order (sequence-major).
    """
    if out_dir is not None:
        warnings.warn("collect_activations(..., out_dir=...) is deprecated and will be removed in the next "
                      "release: call saelab.harvest.harvest_to_store(model, hook_name, tokens, out_dir, ...), "
                      "which returns the ActivationStore", DeprecationWarning, stacklevel=2)
        return harvest_to_store(model, hook_name, tokens, out_dir, batch_size=batch_size, dtype=dtype,
                                progress=progress, drop_bos=drop_bos, rows_per_shard=rows_per_shard,
                                replace_different=replace_different)
    _check_harvest_args(model, hook_name, tokens, batch_size, dtype)
    parts = list(_forward_batches(model, hook_name, tokens, batch_size, dtype, drop_bos, progress,
                                  f"harvesting {hook_name}"))
    return torch.cat(parts)


def _fingerprint(tokens: Tensor) -> str:
    return hashlib.sha1(tokens.contiguous().numpy().tobytes()).hexdigest()


def harvest_to_store(
    model,
    hook_name: str,
    tokens: Int[Tensor, "batch pos"],
    out_dir: str | Path,
    *,
    batch_size: int = 16,
    dtype: torch.dtype | None = None,
    progress: bool = True,
    drop_bos: bool = True,
    rows_per_shard: int = 1024,
    replace_different: bool = False,
) -> "ActivationStore":
    """Stream the activations ``collect_activations`` would return into an on-disk store in ``out_dir``.

    Resumable: called again with the same arguments, it continues after the last finished shard.

    Args:
        rows_per_shard: token rows (sequences) per shard file in the store.
        replace_different: when ``out_dir`` holds a harvest of other tokens/hook/settings, delete its shards and
            start afresh instead of raising (a harvest of the same inputs is always resumed).
        the others: as for ``collect_activations``.
    Returns:
        the ``ActivationStore`` in ``out_dir``; ``store.load()`` equals ``collect_activations``'s tensor.
    """
    _check_harvest_args(model, hook_name, tokens, batch_size, dtype)
    out_dir = Path(out_dir)
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {
        "format": _FORMAT, "hook_name": hook_name, "model": model.cfg.model_name, "d_model": model.cfg.d_model,
        "seq_len": tokens.shape[1], "n_rows": tokens.shape[0], "drop_bos": drop_bos,
        "dtype": str(dtype or next(model.parameters()).dtype).removeprefix("torch."),
        "rows_per_shard": rows_per_shard, "tokens_sha1": _fingerprint(tokens.cpu()),
    }
    meta_path = out_dir / "metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if meta is not None:
        differs = [key for key, value in wanted.items() if meta.get(key) != value]
        if differs and replace_different:
            # Only the store's own files go: never anything else a user keeps in that folder.
            for old in [*out_dir.glob("shard_*.safetensors"), *out_dir.glob("*.partial"), meta_path]:
                old.unlink()
            meta = None
        elif differs:
            raise ValueError(f"out_dir={str(out_dir)!r} holds a different harvest (differs in {differs}); "
                             "use an empty folder or replace_different=True")
    if meta is None:
        meta = {**wanted, "shards": [], "complete": False}
        write_json_atomic(meta_path, meta)
    n_shards = -(-tokens.shape[0] // rows_per_shard)
    done = {shard["file"] for shard in meta["shards"] if (out_dir / shard["file"]).is_file()}
    for index in range(n_shards):
        name = f"shard_{index:05d}.safetensors"
        if name in done:
            continue
        rows = tokens[index * rows_per_shard:(index + 1) * rows_per_shard]
        acts = torch.cat(list(_forward_batches(model, hook_name, rows, batch_size, dtype, drop_bos, progress,
                                               f"shard {index + 1}/{n_shards}")))
        write_atomic(out_dir / name, lambda temporary: save_file({"activations": acts.contiguous()}, temporary))
        meta["shards"] = [s for s in meta["shards"] if s["file"] != name] + [
            {"file": name, "first_row": index * rows_per_shard, "n_rows": rows.shape[0],
             "n_activations": acts.shape[0]}]
        meta["shards"].sort(key=lambda shard: shard["file"])
        write_json_atomic(meta_path, meta)
    meta["complete"] = True
    write_json_atomic(meta_path, meta)
    return ActivationStore(out_dir)


class ActivationStore:
    """A finished (or partly finished) harvest on disk; shards are read memory-mapped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "metadata.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"path={str(self.path)!r} holds no metadata.json: not an activation store")
        self.metadata = json.loads(meta_path.read_text())
        if self.metadata.get("format") != _FORMAT:
            raise ValueError(f"path={str(self.path)!r}: unknown store format {self.metadata.get('format')!r}")

    @property
    def complete(self) -> bool:
        return bool(self.metadata["complete"])

    @property
    def shapes(self) -> list[int]:
        return [shard["n_activations"] for shard in self.metadata["shards"]]

    def __len__(self) -> int:
        return sum(self.shapes)

    def shard(self, index: int) -> Float[Tensor, "rows d_model"]:
        """One shard's activations, memory-mapped from disk."""
        file = self.path / self.metadata["shards"][index]["file"]
        with safe_open(str(file), framework="pt") as handle:
            return handle.get_tensor("activations")

    def iter_shards(self) -> Iterator[Float[Tensor, "rows d_model"]]:
        for index in range(len(self.metadata["shards"])):
            yield self.shard(index)

    def load(self) -> Float[Tensor, "n_tokens d_model"]:
        """All activations in one tensor (needs them to fit in RAM)."""
        return torch.cat(list(self.iter_shards()))

    def token_index(self) -> Int[Tensor, " n_tokens"]:
        """For each stored activation, the flat index ``row * seq_len + pos`` of its token in the harvested tokens."""
        seq_len, first = self.metadata["seq_len"], int(self.metadata["drop_bos"])
        parts = []
        for shard in self.metadata["shards"]:
            rows = torch.arange(shard["first_row"], shard["first_row"] + shard["n_rows"])
            parts.append((rows[:, None] * seq_len + torch.arange(first, seq_len)[None, :]).reshape(-1))
        return torch.cat(parts)

    def __repr__(self) -> str:
        state = "complete" if self.complete else "partial"
        return (f"ActivationStore({str(self.path)!r}, {self.metadata['hook_name']}, {len(self)} x "
                f"{self.metadata['d_model']} {self.metadata['dtype']}, {state})")


def token_index(tokens: Tensor, drop_bos: bool = True) -> Int[Tensor, " n_tokens"]:
    """Flat token index ``row * seq_len + pos`` of each row returned by ``collect_activations`` (in memory)."""
    n_rows, seq_len = tokens.shape
    positions = torch.arange(int(drop_bos), seq_len)
    return (torch.arange(n_rows)[:, None] * seq_len + positions[None, :]).reshape(-1)


class NeuronContexts(NamedTuple):
    """The ``k`` strongest activations of one neuron (a column of harvested activations): where and what."""

    activations: list[float]
    flat_index: list[int]
    """``row * seq_len + pos`` of each token in the harvested token tensor."""
    contexts: list[str]
    """The text around each token, the token itself in [brackets]."""


def neuron_top_contexts(acts_NM: Float[Tensor, "n_tokens d_mlp"], tokens: Int[Tensor, "batch pos"], neuron: int,
                        tokenizer, k: int = 10, before: int = 8, after: int = 2,
                        drop_bos: bool = True) -> NeuronContexts:
    """The ``k`` tokens where ``neuron`` fires most; ``acts_NM`` comes from ``collect_activations`` on ``tokens``."""
    if not 0 <= neuron < acts_NM.shape[1]:
        raise ValueError(f"neuron must be in 0..{acts_NM.shape[1] - 1}, got {neuron}")
    index = token_index(tokens, drop_bos)
    if len(index) != acts_NM.shape[0]:
        raise ValueError(f"acts_NM has {acts_NM.shape[0]} rows but tokens give {len(index)} (same drop_bos?)")
    values, where = acts_NM[:, neuron].float().topk(min(k, acts_NM.shape[0]))
    seq_len, flat = tokens.shape[1], tokens.reshape(-1)
    contexts = []
    for i in index[where].tolist():
        row_start = (i // seq_len) * seq_len
        left, right = max(row_start + int(drop_bos), i - before), min(row_start + seq_len, i + after + 1)
        text = (tokenizer.decode(flat[left:i]) + "[" + tokenizer.decode(flat[i:i + 1]) + "]"
                + tokenizer.decode(flat[i + 1:right]))
        contexts.append(text.replace("\n", "⏎"))
    return NeuronContexts(values.tolist(), index[where].tolist(), contexts)


def most_selective_neurons(acts_NM: Float[Tensor, "n_tokens d_mlp"], n: int = 5) -> list[int]:
    """Neurons whose top activation stands out most from their typical one (max / std): good ones to look at."""
    acts = acts_NM.float()
    score = acts.max(dim=0).values / acts.std(dim=0).clamp_min(1e-6)
    return torch.topk(score, min(n, acts.shape[1])).indices.tolist()


def residual_norms(model, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "layer batch pos"]:
    """L2 norm of the residual stream between blocks: row 0 is the embedding (block 0's input), row ``l`` the
    output of block ``l - 1``; ``n_layers + 1`` rows in all."""
    check_tokens(model, tokens)
    n_layers = model.cfg.n_layers
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    names.append(f"blocks.{n_layers - 1}.hook_resid_post")
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=names, return_type=None)
        return torch.stack([cache[name].float().norm(dim=-1).cpu() for name in names])
