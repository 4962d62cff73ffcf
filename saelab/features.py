"""What makes a feature fire, and what it does: the numbers behind a feature dashboard.

Reading a feature's top examples means encoding a whole corpus, which takes minutes; a ``FeatureStore`` does
that once and keeps, per feature, its top activations (with where they occurred), its density, its maximum and
a histogram of its activations, so a dashboard answers in milliseconds. Everything else here works on a single
text and is fast enough to run live.

Shape letters in local names: R activation rows (tokens), F d_sae, T n_top, V d_vocab, D d_model.
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

from saelab.files import write_atomic
from saelab.harvest import check_tokens, collect_activations, token_index
from saelab.sae import SAE
from saelab.splice import check_sae_fits_model, check_sae_width

# Activation histograms use log10-spaced bins over this range (activations in the model's own units).
HISTOGRAM_LOG10_RANGE, HISTOGRAM_BINS = (-2.0, 3.0), 50
_FORMAT = "saelab-feature-store-v1"


def check_feature(sae_or_size: SAE | int, feature: int) -> int:
    d_sae = sae_or_size if isinstance(sae_or_size, int) else sae_or_size.cfg.d_sae
    if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < d_sae:
        raise ValueError(f"feature must be an integer in 0..{d_sae - 1}, got {feature!r}")
    return feature


@dataclass
class FeatureStore:
    """Per-feature summaries of one SAE over one token corpus.

    ``top_index`` holds flat token positions ``row * seq_len + pos`` into ``tokens`` (-1 where a feature fired
    on fewer than ``n_top`` tokens); ``histogram`` counts non-zero activations in log10 bins ``bin_edges``.
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

    @property
    def d_sae(self) -> int:
        return self.top_values.shape[0]

    def save(self, path: str | os.PathLike) -> Path:
        """Write one safetensors file atomically (temp file + rename): an interrupted save leaves no partial file."""
        tensors = {name: getattr(self, name).contiguous() for name in
                   ("tokens", "top_values", "top_index", "density", "max_activation", "mean_when_active",
                    "histogram", "bin_edges")}
        header = {"format": _FORMAT, "n_tokens": str(self.n_tokens), "metadata": json.dumps(self.metadata)}
        return write_atomic(path, lambda temporary: save_file(tensors, temporary, metadata=header))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStore":
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
    progress: bool = True,
) -> FeatureStore:
    """Encode every token of ``tokens`` (position 0 of each row skipped, as in harvesting) and summarise.

    ``max_norm`` skips tokens whose activation norm exceeds it (the rare outlier tokens of a residual stream,
    which would otherwise top every feature's list).
    """
    check_tokens(model, tokens)
    check_sae_fits_model(model, sae, hook_name)
    if n_top < 1:
        raise ValueError(f"n_top must be >= 1, got {n_top}")
    d_sae = sae.cfg.d_sae
    top_values_FT = torch.full((d_sae, n_top), -1.0)
    top_index_FT = torch.full((d_sae, n_top), -1, dtype=torch.long)
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
            if max_norm is not None:
                keep = acts_RD.norm(dim=-1) <= max_norm
                acts_RD, index_R = acts_RD[keep], index_R[keep]
            if acts_RD.shape[0] == 0:
                bar.update(chunk.shape[0])
                continue
            f_RF = sae.encode(acts_RD)
            n_tokens += f_RF.shape[0]
            active_RF = f_RF > 0
            active_count_F += active_RF.sum(0)
            active_sum_F += f_RF.sum(0)

            # Running top-n per feature: merge this chunk's best with the best so far.
            k = min(n_top, f_RF.shape[0])
            chunk_values_FK, chunk_rows_FK = f_RF.T.topk(k, dim=1)
            merged_values = torch.cat([top_values_FT, chunk_values_FK], dim=1)
            merged_index = torch.cat([top_index_FT, index_R[chunk_rows_FK]], dim=1)
            best_values, best_at = merged_values.topk(n_top, dim=1)
            top_values_FT, top_index_FT = best_values, merged_index.gather(1, best_at)

            rows, features = active_RF.nonzero(as_tuple=True)
            bins = torch.bucketize(f_RF[rows, features].log10(), edges[1:-1])
            histogram_FB.scatter_add_(0, features * HISTOGRAM_BINS + bins, torch.ones_like(bins))
            bar.update(chunk.shape[0])
    bar.close()
    if n_tokens == 0:
        raise ValueError("no token was left to encode (all were skipped as outliers by max_norm?)")
    empty = top_values_FT <= 0  # a slot filled by a zero activation is no example of the feature firing
    top_index_FT[empty] = -1
    top_values_FT = top_values_FT.clamp(min=0)
    metadata = {"hook_name": hook_name, "d_sae": d_sae, "n_top": n_top, "max_norm": max_norm,
                "sae": dict(sae.cfg.metadata)}
    return FeatureStore(
        tokens=tokens.clone(), top_values=top_values_FT, top_index=top_index_FT,
        density=active_count_F / n_tokens, max_activation=top_values_FT[:, 0].clone(),
        mean_when_active=active_sum_F / active_count_F.clamp(min=1),
        histogram=histogram_FB.view(d_sae, HISTOGRAM_BINS), bin_edges=edges, n_tokens=n_tokens,
        metadata=metadata,
    )


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

    The window's activations are recomputed (one short forward pass per context), so the highlighting shows
    how the feature rises and falls around its peak.
    """
    check_feature(store.d_sae, feature)
    hook_name = store.metadata["hook_name"]
    seq_len = store.tokens.shape[1]
    contexts = []
    for value, flat in zip(store.top_values[feature, :n].tolist(), store.top_index[feature, :n].tolist()):
        if flat < 0:
            break
        row, pos = divmod(flat, seq_len)
        first, last = max(1, pos - before), min(seq_len, pos + after + 1)
        window = store.tokens[row:row + 1, :last]  # keep the prefix: activations depend on what came before
        acts = feature_activations(model, sae, hook_name, window)[0, :, feature]
        contexts.append(Context(tokens=model.to_str_tokens(window[0, first:last]),
                                activations=acts[first:last].tolist(), peak=pos - first, value=value))
    return contexts


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
        raise ValueError("text must be a non-empty string")
    tokens = model.to_tokens(text)
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
    check_feature(sae, feature)
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
    acts = feature_activations(model, sae, store.metadata["hook_name"], text_tokens(model, text))[0, 1:]
    relative_F = acts.max(dim=0).values / store.max_activation.clamp(min=1e-6)
    relative_F[store.max_activation <= 0] = 0
    values, ids = relative_F.topk(min(k, relative_F.shape[0]))
    return [(int(i), float(v)) for i, v in zip(ids, values) if v > 0]
