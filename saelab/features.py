"""What makes a feature fire, and what it does: the numbers behind a feature dashboard.

Top examples come from a ``FeatureStore`` (:mod:`saelab.feature_store`), built once per SAE, so a dashboard
answers without running the model; everything else here works on a single text and is fast enough to run live.

Shape letters in local names: R activation rows (tokens), F d_sae, V d_vocab, D d_model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from saelab import deprecated
from saelab.feature_store import (  # noqa: F401  (re-exported)
    CONTEXT_WINDOW,
    FeatureStore,
    build_feature_store,
    check_store_fits,
    check_window,
)
from saelab.harvest import check_tokens, collect_activations
from saelab.sae import SAE, check_feature_index


def check_feature(sae_or_size: SAE | int, feature: int) -> int:
    """Deprecated: ``sae.check_feature(feature)`` (or ``saelab.sae.check_feature_index(d_sae, feature)``)."""
    deprecated.warn("features.check_feature", "sae.check_feature(feature)", stacklevel=3)
    d_sae = sae_or_size if isinstance(sae_or_size, int) else sae_or_size.cfg.d_sae
    return check_feature_index(d_sae, feature)


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
    feature = check_feature_index(store.d_sae, feature)
    check_window(before, after)
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


def feature_activations(model, sae: SAE, tokens: Int[Tensor, "batch pos"], *old_shape,
                        hook_name: str | None = None) -> Float[Tensor, "batch pos d_sae"]:
    """Every feature's activation at every position of ``tokens`` (position 0 included), at the SAE's hook
    (or ``hook_name``)."""
    (tokens,), hook_name = deprecated.hook_first("features.feature_activations(model, sae, tokens)",
                                                 (tokens, *old_shape), hook_name, old=isinstance(tokens, str), takes=1)
    check_tokens(model, tokens)
    hook_name = sae.check_fits(model, hook_name)
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


def features_on_text(model, sae: SAE, text: str, *old_shape, k: int = 5, hook_name: str | None = None
                     ) -> list[tuple[str, list[tuple[int, float]]]]:
    """"Which features fire on this text?": for each token (BOS excluded), its ``k`` strongest features."""
    old = bool(old_shape) and isinstance(old_shape[0], str)  # (model, sae, hook_name, text)
    (text,), hook_name = deprecated.hook_first("features.features_on_text(model, sae, text, k=...)",
                                               (text, *old_shape), hook_name, old=old, takes=1)
    tokens = text_tokens(model, text)
    acts_PF = feature_activations(model, sae, tokens, hook_name=hook_name)[0, 1:]
    values, ids = acts_PF.topk(min(k, acts_PF.shape[1]), dim=1)
    words = model.to_str_tokens(tokens[0, 1:])
    return [(word, [(int(i), float(v)) for i, v in zip(row_ids, row_values) if v > 0])
            for word, row_ids, row_values in zip(words, ids.tolist(), values.tolist())]


def logit_effects(model, sae: SAE, feature: int, k: int = 10) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Tokens whose logits the feature's decoder direction raises most and lowers most (the direct path).

    The direction passes through the final norm's learned scale and the unembedding, ignoring later layers —
    a first look, as in Anthropic's dashboards, not the feature's full effect.
    """
    feature = sae.check_feature(feature)
    sae.check_width(model)
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
    acts = feature_activations(model, sae, text_tokens(model, text), hook_name=store.hook_name)[0, 1:]
    relative_F = acts.max(dim=0).values / store.max_activation.clamp(min=1e-6)
    relative_F[store.max_activation <= 0] = 0
    values, ids = relative_F.topk(min(k, relative_F.shape[0]))
    return [(int(i), float(v)) for i, v in zip(ids, values) if v > 0]
