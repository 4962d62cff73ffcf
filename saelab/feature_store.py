"""A feature store: one pass of an SAE over a corpus, summarised per feature, so a dashboard answers at once.

Reading a feature's top examples means encoding a whole corpus, which takes minutes. A ``FeatureStore`` does
that once and keeps, per feature, its top activations (with where they occurred), its density, its maximum and
a histogram of its activations, and the feature's activations in a window of tokens around each top example.
Saved as one safetensors file.

Shape letters in local names: R activation rows (tokens), F d_sae, T n_top, M non-zero codes, W window.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from saelab import deprecated
from saelab.files import write_atomic
from saelab.harvest import check_tokens, collect_activations, token_index
from saelab.sae import SAE

# Activation histograms use log10-spaced bins over this range (activations in the model's own units).
HISTOGRAM_LOG10_RANGE, HISTOGRAM_BINS = (-2.0, 3.0), 50
# Tokens kept before and after each top example, with the feature's activation on each (what a dashboard shows).
CONTEXT_WINDOW = (12, 4)
_FORMAT = "saelab-feature-store-v1"


@dataclass
class FeatureStore:
    """Per-feature summaries of one SAE over one token corpus.

    ``top_index`` holds flat token positions ``row * seq_len + pos`` into ``tokens`` (-1 where a feature fired
    on fewer than ``n_top`` tokens); ``histogram`` counts non-zero activations in log10 bins ``bin_edges``.
    ``context_activations[f, t]`` is feature ``f``'s activation on the ``before + 1 + after`` tokens around its
    ``t``-th top example (``metadata["context_window"] == [before, after]``; 0 outside the row), or None for a
    store built without them.
    """

    tokens: Int[Tensor, "n_seq pos"]
    top_values: Float[Tensor, "d_sae n_top"]
    top_index: Int[Tensor, "d_sae n_top"]
    density: Float[Tensor, " d_sae"]
    max_activation: Float[Tensor, " d_sae"]
    mean_when_active: Float[Tensor, " d_sae"]
    histogram: Int[Tensor, "d_sae bins"]
    bin_edges: Float[Tensor, " bins_plus_one"]
    n_tokens: int
    metadata: dict = field(default_factory=dict)
    context_activations: Float[Tensor, "d_sae n_top window"] | None = None

    @property
    def d_sae(self) -> int:
        return self.top_values.shape[0]

    @property
    def hook_name(self) -> str:
        return self.metadata["hook_name"]

    def save(self, path: str | os.PathLike) -> Path:
        """Write one safetensors file atomically (temp file + rename): an interrupted save leaves no partial file."""
        names = ["tokens", "top_values", "top_index", "density", "max_activation", "mean_when_active", "histogram",
                 "bin_edges"] + (["context_activations"] if self.context_activations is not None else [])
        tensors = {name: getattr(self, name).contiguous() for name in names}
        header = {"format": _FORMAT, "n_tokens": str(self.n_tokens), "metadata": json.dumps(self.metadata)}
        return write_atomic(path, lambda temporary: save_file(tensors, temporary, metadata=header))

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStore:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no feature store at {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                header = handle.metadata() or {}
                if header.get("format") != _FORMAT:
                    raise ValueError(f"{path} is not a saelab feature store (format {header.get('format')!r})")
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except ValueError:
            raise
        except Exception as error:  # a truncated or foreign file: say which, not a stack of safetensors internals
            raise ValueError(f"{path} is not a readable safetensors feature store: {error}") from None
        return cls(**tensors, n_tokens=int(header["n_tokens"]), metadata=json.loads(header["metadata"]))


def check_store_fits(model, sae: SAE, store: FeatureStore) -> None:
    """Refuse a store built for another SAE (other width or hook) and an SAE that does not fit the model.

    What a widget showing ``store``'s examples for ``sae`` on ``model`` checks first."""
    if not isinstance(store, FeatureStore):
        raise TypeError(f"store must be a FeatureStore (feature_store.build_feature_store or FeatureStore.load), "
                        f"got {type(store).__name__}")
    sae.check_fits(model, store.hook_name)
    if store.d_sae != sae.cfg.d_sae:
        raise ValueError(f"the feature store was built for an SAE with d_sae={store.d_sae}, but this SAE has "
                         f"d_sae={sae.cfg.d_sae}")


def check_window(before: int, after: int) -> None:
    """Refuse a context window that is not two integers >= 0."""
    for name, value in (("before", before), ("after", after)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def build_feature_store(
    model,
    sae: SAE,
    tokens: Int[Tensor, "n_seq pos"],
    *old_shape,
    hook_name: str | None = None,
    n_top: int = 20,
    batch_size: int = 8,
    rows_per_chunk: int = 64,
    dtype: torch.dtype | None = None,
    max_norm: float | None = None,
    context_window: tuple[int, int] | None = CONTEXT_WINDOW,
    progress: bool = True,
) -> FeatureStore:
    """Encode every token of ``tokens`` (position 0 of each row skipped, as in harvesting) and summarise.

    ``max_norm`` skips tokens whose activation norm exceeds it (the rare outlier tokens of a residual stream,
    which would otherwise top every feature's list); they still show, with their activations, inside the
    windows of ``context_window = (before, after)`` tokens kept around each top example (None keeps none).
    The SAE reads its own hook point, or ``hook_name``.
    """
    (tokens,), hook_name = deprecated.hook_first("feature_store.build_feature_store(model, sae, tokens)",
                                                 (tokens, *old_shape), hook_name, old=isinstance(tokens, str), takes=1)
    check_tokens(model, tokens)
    hook_name = sae.check_fits(model, hook_name)
    if n_top < 1:
        raise ValueError(f"n_top must be >= 1, got {n_top}")
    if context_window is not None:
        if not isinstance(context_window, (tuple, list)) or len(context_window) != 2:
            raise ValueError(f"context_window must be (before, after) or None, got {context_window!r}")
        check_window(*context_window)
    d_sae, seq_len = sae.cfg.d_sae, tokens.shape[1]
    top_values_FT = torch.full((d_sae, n_top), -1.0)
    top_index_FT = torch.full((d_sae, n_top), -1, dtype=torch.long)
    before, after = context_window or (0, 0)
    offsets_W = torch.arange(-before, after + 1)
    top_windows_FTW = torch.zeros(d_sae, n_top, len(offsets_W)) if context_window is not None else None
    active_count_F = torch.zeros(d_sae)
    active_sum_F = torch.zeros(d_sae)
    edges = torch.linspace(*HISTOGRAM_LOG10_RANGE, HISTOGRAM_BINS + 1)
    histogram_FB = torch.zeros(d_sae * HISTOGRAM_BINS, dtype=torch.long)
    n_tokens = 0
    flat_index = token_index(tokens)
    bar = tqdm(total=tokens.shape[0], desc="encoding corpus", unit="seq", disable=not progress)
    with torch.no_grad():  # not inference_mode: the store's tensors must stay ordinary tensors for the caller
        row = 0
        for start in range(0, tokens.shape[0], rows_per_chunk):
            chunk = tokens[start:start + rows_per_chunk]
            acts_RD = collect_activations(model, hook_name, chunk, batch_size=batch_size, dtype=dtype,
                                          progress=False).float()
            index_R = flat_index[row:row + acts_RD.shape[0]]
            row += acts_RD.shape[0]
            # Every token is encoded (outliers too: they appear in the windows); only kept ones are summarised.
            chunk_f_RF = sae.encode(acts_RD)
            f_RF, local_R = chunk_f_RF, torch.arange(acts_RD.shape[0])
            if max_norm is not None:
                keep = acts_RD.norm(dim=-1) <= max_norm
                if not keep.all():
                    f_RF, index_R, local_R = chunk_f_RF[keep], index_R[keep], local_R[keep]
            if f_RF.shape[0] == 0:
                bar.update(chunk.shape[0])
                continue
            n_tokens += f_RF.shape[0]
            active_RF = f_RF > 0
            active_count_F += active_RF.sum(0)
            active_sum_F += f_RF.sum(0)

            # Running top-n per feature: this chunk's best merged with the best so far. The chunk's best come
            # from its non-zero codes only: a dense top-k down every feature's column costs more than the model.
            rows, features = active_RF.nonzero(as_tuple=True)
            values = f_RF[rows, features]
            chunk_values_FT, chunk_rows_FT = _top_per_feature(values, rows, features, d_sae, n_top)
            chunk_index_FT = torch.where(chunk_rows_FT >= 0, index_R[chunk_rows_FT.clamp(min=0)], -1)
            best_values, best_at = torch.cat([top_values_FT, chunk_values_FT], dim=1).topk(n_top, dim=1)
            top_index_FT = torch.cat([top_index_FT, chunk_index_FT], dim=1).gather(1, best_at)
            top_values_FT = best_values
            if top_windows_FTW is not None:
                # Windows for this chunk's examples that made the list, read from its codes (chunks hold whole rows).
                kept_at = best_at.clamp(max=n_top - 1)[..., None].expand(-1, -1, len(offsets_W))
                top_windows_FTW = top_windows_FTW.gather(1, kept_at)
                new_f, new_t = ((best_at >= n_top) & (best_values > 0)).nonzero(as_tuple=True)
                at = local_R[chunk_rows_FT[new_f, best_at[new_f, new_t] - n_top]]
                top_windows_FTW[new_f, new_t] = _windows(chunk_f_RF, at, new_f, offsets_W, seq_len - 1)

            bins = torch.bucketize(values.log10(), edges[1:-1])
            histogram_FB.scatter_add_(0, features * HISTOGRAM_BINS + bins, torch.ones_like(bins))
            bar.update(chunk.shape[0])
    bar.close()
    if n_tokens == 0:
        raise ValueError("no token was left to encode (all were skipped as outliers by max_norm?)")
    empty = top_values_FT <= 0  # a slot filled by a zero activation is no example of the feature firing
    top_index_FT[empty] = -1
    top_values_FT = top_values_FT.clamp(min=0)
    if top_windows_FTW is not None:
        top_windows_FTW[empty] = 0
    metadata = {"hook_name": hook_name, "d_sae": d_sae, "n_top": n_top, "max_norm": max_norm,
                "context_window": list(context_window) if context_window is not None else None,
                "sae": sae.cfg.provenance()}
    return FeatureStore(
        tokens=tokens.clone(), top_values=top_values_FT, top_index=top_index_FT,
        density=active_count_F / n_tokens, max_activation=top_values_FT[:, 0].clone(),
        mean_when_active=active_sum_F / active_count_F.clamp(min=1),
        histogram=histogram_FB.view(d_sae, HISTOGRAM_BINS), bin_edges=edges, n_tokens=n_tokens,
        metadata=metadata, context_activations=top_windows_FTW,
    )


def _top_per_feature(values_M: Float[Tensor, " m"], rows_M: Int[Tensor, " m"], features_M: Int[Tensor, " m"],
                     d_sae: int, n_top: int) -> tuple[Float[Tensor, "d_sae n_top"], Int[Tensor, "d_sae n_top"]]:
    """Each feature's ``n_top`` largest of the non-zero codes ``values_M`` (at ``rows_M``), best first; slots
    beyond a feature's count hold value -1 and row -1."""
    order = values_M.argsort(descending=True, stable=True)
    order = order[features_M[order].argsort(stable=True)]  # by feature, each feature's codes largest first
    features_sorted = features_M[order]
    counts = torch.bincount(features_M, minlength=d_sae)
    rank = torch.arange(len(order)) - (counts.cumsum(0) - counts)[features_sorted]
    kept = rank < n_top
    values_FT = torch.full((d_sae, n_top), -1.0)
    rows_FT = torch.full((d_sae, n_top), -1, dtype=torch.long)
    values_FT[features_sorted[kept], rank[kept]] = values_M[order[kept]]
    rows_FT[features_sorted[kept], rank[kept]] = rows_M[order[kept]]
    return values_FT, rows_FT


def _windows(f_RF: Float[Tensor, "rows d_sae"], at_M: Int[Tensor, " m"], features_M: Int[Tensor, " m"],
             offsets_W: Int[Tensor, " window"], positions: int) -> Float[Tensor, "m window"]:
    """Feature ``features_M[i]``'s codes around code row ``at_M[i]``, within that row's sequence (0 beyond its
    ends). Code rows are sequence-major, ``positions`` rows per sequence (BOS dropped)."""
    sequence_M, position_M = at_M.div(positions, rounding_mode="floor"), at_M % positions
    position_MW = position_M[:, None] + offsets_W
    inside_MW = (position_MW >= 0) & (position_MW < positions)
    rows_MW = sequence_M[:, None] * positions + position_MW.clamp(0, positions - 1)
    return f_RF[rows_MW, features_M[:, None]] * inside_MW
