"""Choosing a steering feature by what it does, not by what it fires on (Arad, Mueller & Belinkov, 2025).

A feature that *detects* a concept need not *steer* toward it: a latent that fires on " Bridge" may, when
clamped, push the model toward anything but the bridge. So candidates are ranked by their effect, in two stages:

1. ``concept_gain``, teacher-forced and batched: clamp each candidate at a fixed push length (a fraction of the
   median residual norm at the hook, so every feature pushes equally hard) on a few neutral chat prompts, and
   measure how much the log-probability of concept continuations ("I am the Golden Gate Bridge", ...) rises
   per token. Cheap: one forward pass per (feature, prompt) row, no generation. Candidates come from
   ``logit_effect_ranking`` (the decoder row read through the unembedding, cheaper still) and any others given.
2. By generation: ``reply_scan`` answers one prompt greedily with each of a few hundred candidates clamped,
   one candidate per row of a batched generation; ``reply_scores`` answers several prompts for the few best.
   Replies are scored with stated offline proxies (see :mod:`saelab.reply_checks`): mentions of the concept, a
   first-person claim to *be* it, word 3-gram repetition, and the unsteered model's perplexity of the reply.

On the shipped SAE, stage 1 alone picked the wrong features: its best concept gain came from a landmark
feature whose clamp names the Great Pyramid or the Capitol, not the bridge. Generation is the judge.

Strengths are reported in both units people compare: the clamp value as a multiple of the feature's largest
activation on the corpus, and the push length (``value * ||W_dec[f]||``, the vector added where the feature
was silent) as a fraction of the median residual norm.

Shape letters in local names: B batch rows, T tokens, D d_model, F d_sae, V d_vocab.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from saelab import lm, reply_checks
from saelab.files import write_json_atomic
from saelab.sae import SAE, check_feature_index


class Strength(NamedTuple):
    """One clamp strength in the units people compare."""

    value: float
    """The clamp value (the feature's activation is held here at every position)."""
    multiple_of_max: float
    """``value`` / the feature's largest activation on the corpus."""
    push_fraction: float
    """The push length ``value * ||W_dec[f]||`` / the median residual norm at the hook."""


def median_residual_norms(model, hook_names: Sequence[str], prompts: Sequence[str]) -> dict[str, float]:
    """Per hook, the median activation norm over the chat-formatted ``prompts``, position 0 (a sink with a
    huge norm) excluded, all hooks read in one forward pass per prompt: the yardstick for push lengths."""
    rows: dict[str, list[Tensor]] = {name: [] for name in hook_names}
    for prompt in prompts:
        with torch.no_grad():
            _, cache = model.run_with_cache(lm.chat_tokens(model, prompt), names_filter=list(hook_names))
        for name in hook_names:
            rows[name].append(cache[name][0, 1:].float().norm(dim=-1).cpu())
    return {name: float(torch.cat(parts).median()) for name, parts in rows.items()}


def median_residual_norm(model, hook_name: str, prompts: Sequence[str]) -> float:
    """Median norm of the activation at ``hook_name`` over the chat-formatted ``prompts`` (position 0 excluded)."""
    return median_residual_norms(model, [hook_name], prompts)[hook_name]


def strength_for_push(sae: SAE, feature: int, push_fraction: float, median_norm: float,
                      max_activation: float) -> Strength:
    """The clamp value whose push is ``push_fraction`` x ``median_norm`` long, in both units."""
    feature = sae.check_feature(feature)
    if not math.isfinite(push_fraction) or push_fraction < 0:
        raise ValueError(f"push_fraction must be a finite number >= 0, got {push_fraction!r}")
    value = push_fraction * median_norm / float(sae.W_dec[feature].detach().norm())
    return Strength(value, value / max_activation if max_activation > 0 else math.inf, push_fraction)


def strength_for_multiple(sae: SAE, feature: int, multiple: float, median_norm: float,
                          max_activation: float) -> Strength:
    """The clamp value ``multiple`` x the feature's max activation, in both units."""
    feature = sae.check_feature(feature)
    value = multiple * max_activation
    return Strength(value, multiple, value * float(sae.W_dec[feature].detach().norm()) / median_norm)


def concept_token_ids(model, words: Sequence[str]) -> Tensor:
    """The first token of each word, with and without a leading space (" Bridge" and "Bridge")."""
    ids = {int(model.to_tokens(form, prepend_bos=False)[0, 0]) for word in words for form in (word, " " + word)}
    return torch.tensor(sorted(ids))


def logit_effect_ranking(model, sae: SAE, concept_ids: Tensor) -> Float[Tensor, " d_sae"]:
    """Per feature: the mean direct-path logit boost of ``concept_ids`` minus the boost of an average token,
    per unit length of the decoder row (so the ranking compares directions, as the clamp's push is set by length).

    The decoder row is read through the final norm's scale and the unembedding (as ``features.logit_effects``),
    ignoring the layers in between: a fast first filter over every feature, not the feature's real effect.
    """
    with torch.no_grad():
        directions_FD = sae.W_dec.float()
        directions_FD = directions_FD / directions_FD.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        scale = getattr(model.ln_final, "w", None)
        if scale is not None:
            directions_FD = directions_FD * scale.float()
        unembed_DV = model.W_U.float()
        concept_F = (directions_FD @ unembed_DV[:, concept_ids]).mean(-1)
        average_F = directions_FD @ unembed_DV.mean(-1)
    return concept_F - average_F


def row_clamp_hook(activation: Tensor, hook, sae: SAE, feature_ids: Tensor, values: Tensor) -> Tensor:
    """Clamp a different feature in each batch row (row b: feature_ids[b] held at values[b]); -1 leaves a row."""
    steered = feature_ids >= 0
    if not steered.any():
        return activation
    rows = activation[steered].float()
    ids = feature_ids[steered]
    codes_BTF = sae.encode(rows)
    current_BT = codes_BTF.gather(-1, ids[:, None, None].expand(-1, rows.shape[1], 1))[..., 0]
    change_BTD = (values[steered][:, None] - current_BT)[..., None] * sae.W_dec[ids].float()[:, None, :]
    out = activation.clone()
    out[steered] = (rows + change_BTD).to(activation.dtype)
    return out


def continuation_batch(pairs: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Each ``(prompt_T, continuation_T)`` token pair as one row, right-padded (causal attention: padding after a
    row cannot change it); the mask marks the continuation's tokens, the ones to score."""
    rows = [torch.cat([prompt_T.cpu(), continuation_T.cpu()]) for prompt_T, continuation_T in pairs]
    width = max(len(r) for r in rows)
    tokens_BT = torch.zeros(len(rows), width, dtype=torch.long)
    scored_BT = torch.zeros(len(rows), width, dtype=torch.bool)
    for b, (row, (prompt_T, _)) in enumerate(zip(rows, pairs)):
        tokens_BT[b, :len(row)] = row
        scored_BT[b, len(prompt_T):len(row)] = True
    return tokens_BT, scored_BT


def _continuation_batch(model, prompt: str, continuations: Sequence[str]) -> tuple[Tensor, Tensor]:
    """The chat prompt followed by each continuation, as :func:`continuation_batch` rows."""
    prompt_T = lm.chat_tokens(model, prompt)[0]
    return continuation_batch([(prompt_T, model.to_tokens(c, prepend_bos=False)[0]) for c in continuations])


def next_token_logprobs(logits_BTV: Tensor, tokens_BT: Tensor) -> Float[Tensor, "batch pos_minus_1"]:
    """The log-probability of each token after the first, read from the logits one position before it."""
    logprobs_BTV = logits_BTV.float().log_softmax(-1)[:, :-1]
    return logprobs_BTV.gather(-1, tokens_BT[:, 1:, None].to(logprobs_BTV.device))[..., 0]


def mean_logprob(model, tokens_BT: Tensor, scored_BT: Tensor, hooks) -> Float[Tensor, " batch"]:
    """Mean log-probability per scored token of each row."""
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        picked_BT = next_token_logprobs(model(tokens_BT.to(model.cfg.device)), tokens_BT).cpu()
    mask_BT = scored_BT[:, 1:].float()
    return (picked_BT * mask_BT).sum(-1) / mask_BT.sum(-1)


def concept_gain(
    model,
    sae: SAE,
    features: Sequence[int],
    prompts: Sequence[str],
    continuations: Sequence[str],
    push_fraction: float,
    median_norm: float,
    *,
    hook_name: str | None = None,
    features_per_pass: int = 8,
    progress: bool = True,
) -> Float[Tensor, " features"]:
    """Per feature: how much clamping it (push ``push_fraction`` x ``median_norm``, every position) raises the
    mean per-token log-probability of ``continuations`` after each chat prompt, averaged over prompts and
    continuations. Positive: the feature moves the model toward saying them."""
    name = sae.check_fits(model, hook_name)
    if not features or not prompts or not continuations:
        raise ValueError("features, prompts and continuations must each hold at least one item")
    ids = torch.tensor([sae.check_feature(f) for f in features])
    values = push_fraction * median_norm / sae.W_dec[ids].detach().float().norm(dim=-1)
    gains = torch.zeros(len(ids))
    n_cont = len(continuations)
    passes_per_prompt = math.ceil(len(ids) / features_per_pass)
    bar = tqdm(total=len(prompts) * passes_per_prompt, desc="concept gain", disable=not progress)
    for prompt in prompts:
        tokens_BT, scored_BT = _continuation_batch(model, prompt, continuations)
        base_C = mean_logprob(model, tokens_BT, scored_BT, [])
        for start in range(0, len(ids), features_per_pass):
            chunk = ids[start:start + features_per_pass]
            row_ids = chunk.repeat_interleave(n_cont)
            row_values = values[start:start + features_per_pass].repeat_interleave(n_cont)
            hook = partial(row_clamp_hook, sae=sae, feature_ids=row_ids, values=row_values)
            steered = mean_logprob(model, tokens_BT.repeat(len(chunk), 1), scored_BT.repeat(len(chunk), 1),
                                    [(name, hook)])
            gains[start:start + len(chunk)] += (steered.view(len(chunk), n_cont) - base_C).mean(-1)
            bar.update()
    bar.close()
    return gains / len(prompts)


class ReplyScore(NamedTuple):
    """One greedy reply under a steering setting, scored with cheap offline proxies."""

    prompt: str
    reply: str
    on_topic: bool
    """The reply mentions one of the concept's words."""
    claims_identity: bool
    """The reply says, in the first person, that the model *is* the concept ("I am ... bridge")."""
    repetition: float
    """Fraction of word 3-grams already seen earlier in the reply (0: none; fluent text stays under ~0.2)."""
    perplexity: float
    """The unsteered model's perplexity of the reply: how odd the steered text reads to the plain model."""


def reply_perplexity(model, prompt_tokens: Tensor, reply_tokens: Tensor) -> float:
    """Perplexity of ``reply_tokens`` after ``prompt_tokens`` (a ``(1, pos)`` chat prompt) under the model as it is
    (no hooks): how odd the reply reads to the plain model."""
    if reply_tokens.numel() == 0:
        return math.nan
    prompt_T = prompt_tokens[0]
    tokens_T = torch.cat([prompt_T, reply_tokens.to(prompt_T.device)])
    scored_T = torch.zeros(len(tokens_T), dtype=torch.bool)
    scored_T[len(prompt_T):] = True
    return math.exp(-float(mean_logprob(model, tokens_T[None], scored_T[None], [])[0]))


def reply_scores(model, prompts: Sequence[str], hooks, *, concept_words: Sequence[str], identity_noun: str,
                 max_new_tokens: int = 32, system: str | None = None) -> list[ReplyScore]:
    """Answer each prompt greedily with ``hooks`` active and score the reply (see :class:`ReplyScore`)."""
    scores = []
    for prompt in prompts:
        tokens = lm.chat_tokens(model, prompt, system)
        new_T = lm.generate(model, tokens, max_new_tokens, fwd_hooks=hooks)[0]
        text = model.tokenizer.decode(new_T, skip_special_tokens=True).strip()
        content_T = new_T[new_T != model.tokenizer.eos_token_id]
        # Perplexity is judged after the plain question, without the system prompt a method may have added.
        plain = tokens if system is None else lm.chat_tokens(model, prompt)
        scores.append(ReplyScore(prompt, text, reply_checks.mentions(text, concept_words),
                                 reply_checks.claims_identity(text, identity_noun), reply_checks.repetition(text),
                                 reply_perplexity(model, plain, content_T)))
    return scores


class ScanResult(NamedTuple):
    """One candidate feature's greedy reply to the scan's prompt under its clamp."""

    feature: int
    strength: Strength
    reply: str
    on_topic: bool
    claims_identity: bool
    fluent: bool


def reply_scan(model, sae: SAE, features: Sequence[int], prompt: str, push_fraction: float, median_norm: float,
               max_activation: Tensor, *, concept_words: Sequence[str], identity_noun: str,
               max_new_tokens: int = 20, rows_per_pass: int = 48, hook_name: str | None = None,
               progress: bool = True) -> list[ScanResult]:
    """Stage 2 for many candidates: each feature clamped (push ``push_fraction`` x ``median_norm``) in its own
    row of one batched greedy generation, and its reply to ``prompt`` checked with the offline proxies.

    ``max_activation`` (per feature, e.g. a feature store's) converts each push to a multiple of max."""
    name = sae.check_fits(model, hook_name)
    if not features:
        raise ValueError("features must hold at least one feature id")
    ids = torch.tensor([sae.check_feature(f) for f in features])
    tokens = lm.chat_tokens(model, prompt)
    results = []
    for start in tqdm(range(0, len(ids), rows_per_pass), desc="reply scan", disable=not progress):
        chunk = ids[start:start + rows_per_pass]
        strengths = [strength_for_push(sae, f, push_fraction, median_norm, float(max_activation[f]))
                     for f in chunk.tolist()]
        values = torch.tensor([s.value for s in strengths])
        hook = partial(row_clamp_hook, sae=sae, feature_ids=chunk, values=values)
        with torch.no_grad():
            new_BT = lm.generate(model, tokens.repeat(len(chunk), 1), max_new_tokens, fwd_hooks=[(name, hook)],
                                 threads=None)
        for f, strength, row in zip(chunk.tolist(), strengths, new_BT):
            text = model.tokenizer.decode(row, skip_special_tokens=True).strip()
            results.append(ScanResult(f, strength, text, reply_checks.mentions(text, concept_words),
                                      reply_checks.claims_identity(text, identity_noun),
                                      not reply_checks.degenerate(text)))
    return results


def record_steering(sae_folder, name: str, entry: dict) -> None:
    """Write ``entry`` (``feature``, ``push_fraction``, ``multiple_of_max``, ``value`` and its evidence) as the
    steering feature of concept ``name`` into the SAE folder's ``features.json``, next to what detection
    recorded there, so ``pretrained.feature(name, role="steer")`` returns it. Atomic: a crash leaves the old file."""
    missing = {"feature", "push_fraction", "multiple_of_max", "value"} - set(entry)
    if missing:
        raise ValueError(f"entry lacks {sorted(missing)}: give the feature and its setting in both units")
    file = Path(sae_folder) / "features.json"
    named = json.loads(file.read_text()) if file.is_file() else {}
    named.setdefault(name, {})["steer"] = entry
    write_json_atomic(file, named)


# ------------------------------------------------------------------ a clamp given in multiples of the max
CLAMP_MULTIPLE_RANGE = (-10.0, 20.0)
"""Clamp strengths the steering panel offers, in multiples of the feature's largest activation on the corpus."""


def clamp_value(store, feature: int, multiple: float) -> float:
    """The activation ``feature`` is clamped to: ``multiple`` times its maximum on ``store``'s corpus (0 ablates).

    ``store`` is the SAE's ``FeatureStore``; ``multiple`` must lie in ``CLAMP_MULTIPLE_RANGE``.
    """
    check_feature_index(store.d_sae, feature)
    if isinstance(multiple, bool) or not isinstance(multiple, (int, float)) or not math.isfinite(multiple):
        raise ValueError(f"multiple must be a finite number, got {multiple!r}")
    low, high = CLAMP_MULTIPLE_RANGE
    if not low <= multiple <= high:
        raise ValueError(f"multiple must be between {low:g} and {high:g} (times the feature's max), got {multiple!r}")
    top = float(store.max_activation[feature])
    if top <= 0:
        raise ValueError(f"feature {feature} never fired on the store's corpus (max activation 0), so multiples of "
                         "it clamp nothing; pick another feature")
    return multiple * top
