"""What makes a feature fire, and what it does: the numbers behind a feature dashboard.

Reading a feature's top examples means encoding a whole corpus, which takes minutes; a ``FeatureStore`` does
that once and keeps, per feature, its top activations (with where they occurred), its density, its maximum and
a histogram of its activations, and the feature's activations in a window of tokens around each top example,
so a dashboard answers without running the model. Everything else here works on a single text and is fast
enough to run live.

Shape letters in local names: R activation rows (tokens), F d_sae, T n_top, M non-zero codes, W window,
V d_vocab, D d_model.
"""

from __future__ import annotations

import json
import operator
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from saelab.files import write_atomic
from saelab.harvest import check_tokens, collect_activations, token_index
from saelab.sae import SAE
from saelab.splice import check_sae_fits_model, check_sae_width

# Activation histograms use log10-spaced bins over this range (activations in the model's own units).
HISTOGRAM_LOG10_RANGE, HISTOGRAM_BINS = (-2.0, 3.0), 50
# Tokens kept before and after each top example, with the feature's activation on each (what a dashboard shows).
CONTEXT_WINDOW = (12, 4)
_FORMAT = "saelab-feature-store-v1"


def check_feature(sae_or_size: SAE | int, feature: int) -> int:
    """``feature`` as a Python int, or a one-line error naming the allowed range (numpy/torch integers accepted)."""
    d_sae = sae_or_size if isinstance(sae_or_size, int) else sae_or_size.cfg.d_sae
    try:
        index = None if isinstance(feature, (bool, float)) else operator.index(feature)
    except TypeError:
        index = None
    if index is None or not 0 <= index < d_sae:
        raise ValueError(f"feature must be an integer in 0..{d_sae - 1}, got {feature!r}")
    return index


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
    """Refuse a store built for another SAE (other width or hook) and an SAE that does not fit the model."""
    if not isinstance(store, FeatureStore):
        raise TypeError(f"store must be a FeatureStore (features.build_feature_store or FeatureStore.load), "
                        f"got {type(store).__name__}")
    check_sae_fits_model(model, sae, store.hook_name)
    if store.d_sae != sae.cfg.d_sae:
        raise ValueError(f"the feature store was built for an SAE with d_sae={store.d_sae}, but this SAE has "
                         f"d_sae={sae.cfg.d_sae}")


def _check_window(before: int, after: int) -> None:
    for name, value in (("before", before), ("after", after)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def build_feature_store(
    model,
    sae: SAE,
    hook_name: str,
    tokens: Int[Tensor, "n_seq pos"],
    *,
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
    """
    check_tokens(model, tokens)
    check_sae_fits_model(model, sae, hook_name)
    if n_top < 1:
        raise ValueError(f"n_top must be >= 1, got {n_top}")
    if context_window is not None:
        if not isinstance(context_window, (tuple, list)) or len(context_window) != 2:
            raise ValueError(f"context_window must be (before, after) or None, got {context_window!r}")
        _check_window(*context_window)
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
                "sae": dict(sae.cfg.metadata)}
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


@dataclass
class Context:
    """A window of text around one of a feature's top activations."""

    tokens: list[str]
    activations: list[float]
    peak: int  # index into ``tokens`` of the activation this context was chosen for
    value: float


def top_contexts(model, sae: SAE, store: FeatureStore, feature: int, n: int = 10, before: int = 12,
                 after: int = 4) -> list[Context]:
    """The ``n`` strongest activations of ``feature`` in the store's corpus, each with its surrounding tokens.

    The activations around each peak show how the feature rises and falls there. They come from the store
    when it kept a wide enough window (no model run); otherwise the rows holding the examples run through the
    model once, together, up to the SAE's hook and the last position needed.
    """
    check_store_fits(model, sae, store)
    feature = check_feature(store.d_sae, feature)
    _check_window(before, after)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    seq_len = store.tokens.shape[1]
    found = [(value, *divmod(flat, seq_len)) for value, flat in
             zip(store.top_values[feature, :n].tolist(), store.top_index[feature, :n].tolist()) if flat >= 0]
    spans = [(max(1, pos - before), min(seq_len, pos + after + 1)) for _, _, pos in found]
    stored = store.metadata.get("context_window")
    if store.context_activations is not None and stored and before <= stored[0] and after <= stored[1]:
        centre = stored[0]
        activations = [store.context_activations[feature, slot, centre - (pos - first):centre + (last - pos)]
                       for slot, ((_, _, pos), (first, last)) in enumerate(zip(found, spans))]
    else:
        activations = _live_windows(model, sae, store, feature, [(row, first, last) for (_, row, _), (first, last)
                                                                 in zip(found, spans)])
    return [Context(tokens=model.to_str_tokens(store.tokens[row, first:last]), activations=acts.tolist(),
                    peak=pos - first, value=value)
            for (value, row, pos), (first, last), acts in zip(found, spans, activations)]


def _live_windows(model, sae: SAE, store: FeatureStore, feature: int, spans: list[tuple[int, int, int]]
                  ) -> list[Float[Tensor, " window"]]:
    """``feature``'s activations on ``tokens[row, first:last]`` for each span: one forward pass over the rows
    involved, each cut after the last position any of its spans needs (causal attention: later tokens cannot
    change earlier activations, so cutting changes nothing); only the spans' positions are encoded."""
    if not spans:
        return []
    needed: dict[int, int] = {}
    for row, _, last in spans:
        needed[row] = max(needed.get(row, 0), last)
    rows = sorted(needed)
    length = max(needed.values())
    acts_RD = collect_activations(model, store.hook_name, store.tokens[rows, :length], batch_size=len(rows),
                                  progress=False, drop_bos=False)
    where = {row: i * length for i, row in enumerate(rows)}
    picked = torch.cat([torch.arange(where[row] + first, where[row] + last) for row, first, last in spans])
    with torch.no_grad():
        values = sae.encode(acts_RD[picked].float())[:, feature]
    return list(values.split([last - first for _, first, last in spans]))


def feature_activations(model, sae: SAE, hook_name: str, tokens: Int[Tensor, "batch pos"]
                        ) -> Float[Tensor, "batch pos d_sae"]:
    """Every feature's activation at every position of ``tokens`` (position 0 included)."""
    check_tokens(model, tokens)
    check_sae_fits_model(model, sae, hook_name)
    acts = collect_activations(model, hook_name, tokens, batch_size=max(1, tokens.shape[0]), progress=False,
                               drop_bos=False)
    with torch.no_grad():
        return sae.encode(acts.float()).view(tokens.shape[0], tokens.shape[1], -1)


def text_tokens(model, text: str) -> Int[Tensor, "1 pos"]:
    if not isinstance(text, str) or not text.strip():
        shown = repr(text) if isinstance(text, str) else type(text).__name__
        raise ValueError(f"text must be a non-empty string with some non-space character, got {shown}")
    tokens = model.to_tokens(text, truncate=False)  # say it is too long rather than silently cut it
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"text is {tokens.shape[1]} tokens long, more than the model's context n_ctx={model.cfg.n_ctx}")
    return tokens


def features_on_text(model, sae: SAE, hook_name: str, text: str, k: int = 5
                     ) -> list[tuple[str, list[tuple[int, float]]]]:
    """"Which features fire on this text?": for each token (BOS excluded), its ``k`` strongest features."""
    tokens = text_tokens(model, text)
    acts_PF = feature_activations(model, sae, hook_name, tokens)[0, 1:]
    values, ids = acts_PF.topk(min(k, acts_PF.shape[1]), dim=1)
    words = model.to_str_tokens(tokens[0, 1:])
    return [(word, [(int(i), float(v)) for i, v in zip(row_ids, row_values) if v > 0])
            for word, row_ids, row_values in zip(words, ids.tolist(), values.tolist())]


def logit_effects(model, sae: SAE, feature: int, k: int = 10) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Tokens whose logits the feature's decoder direction raises most and lowers most (the direct path).

    The direction passes through the final norm's learned scale and the unembedding, ignoring later layers —
    a first look, as in Anthropic's dashboards, not the feature's full effect.
    """
    feature = check_feature(sae, feature)
    check_sae_width(model, sae)
    with torch.no_grad():
        direction_D = sae.W_dec[feature].float()
        scale = getattr(model.ln_final, "w", None)
        if scale is not None:
            direction_D = direction_D * scale.float()
        effect_V = direction_D @ model.W_U.float()
        up, down = effect_V.topk(k), (-effect_V).topk(k)
    as_pairs = lambda ids, values: [(model.tokenizer.decode([i]), v) for i, v in zip(ids.tolist(), values.tolist())]
    return as_pairs(up.indices, up.values), as_pairs(down.indices, (-down.values))


def search_features(model, sae: SAE, store: FeatureStore, text: str, k: int = 10) -> list[tuple[int, float]]:
    """Features that fire on ``text``, ranked by how close they come to their own corpus maximum.

    Dividing by each feature's maximum keeps always-on, large features from crowding out the specific one
    a learner is looking for (searching "Golden Gate Bridge" should find the bridge, not "text is English").
    """
    check_store_fits(model, sae, store)
    acts = feature_activations(model, sae, store.hook_name, text_tokens(model, text))[0, 1:]
    relative_F = acts.max(dim=0).values / store.max_activation.clamp(min=1e-6)
    relative_F[store.max_activation <= 0] = 0
    values, ids = relative_F.topk(min(k, relative_F.shape[0]))
    return [(int(i), float(v)) for i, v in zip(ids, values) if v > 0]
