"""Steering methods head to head: the same prompts, the same model, the same yardstick for strength.

The methods (AxBench, Wu et al. 2025, compares the same families on a larger scale):

- ``clamp``: an SAE feature held at a value at every position, the SAE's error term kept (:mod:`saelab.steer`);
- ``add``: a direction added at every position: an SAE decoder row; the contrastive mean difference of
  activations on concept text minus other text; the persona vector (the model answering in the role minus
  answering plainly); or a direction trained for the job (:mod:`saelab.steering_vector`). No SAE in the last three;
- ``system prompt``: no hook, the concept said in words ("You are the Golden Gate Bridge.").

Every hook method is swept over one axis, the **push**: the length of the vector it adds where the feature was
silent, as a fraction of the median residual norm at its hook. So a clamp at 0.5 and an added direction at 0.5
move the residual stream equally far, whatever the direction's own scale (``Strength`` in
:mod:`saelab.steering_search` converts a clamp's push to multiples of the feature's max activation).

Replies are greedy and scored with the stated offline proxies of :class:`saelab.steering_search.ReplyScore`,
plus one more: ``about_itself``, the reply speaks of itself in the first person (every prompt here asks the
model about itself, so a reply that does not is no longer answering). ``success`` needs all of: on topic,
fluent, about itself, and a perplexity under the unsteered model of at most ``MAX_PERPLEXITY`` (loops such as
"I can, and I can. I can, and I can." pass the repetition check on a short reply but read oddly to the model).

Shape letters: B batch rows (one per strength), T tokens, D d_model.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from saelab import deprecated, lm, reply_checks
from saelab.harvest import check_hook_name
from saelab.sae import SAE
from saelab.steering_search import continuation_batch, mean_logprob, row_clamp_hook

# The unsteered model's own greedy replies to these prompts read at a perplexity of about 2-4 to it.
MAX_PERPLEXITY = 10.0
_FIRST_PERSON = re.compile(r"\b(i|i'm|i’m|me|my|myself|mine)\b", re.IGNORECASE)


class Method(NamedTuple):
    """One way to steer, as a recipe for the hooks at each push (or a system prompt, which has no push)."""

    name: str
    hook_name: str | None
    """Where its hook acts (None: a system prompt)."""
    kind: str
    """``"clamp"``, ``"add"`` or ``"system"``."""
    sae: SAE | None = None
    feature: int | None = None
    direction: Tensor | None = None
    """The unit direction an ``add`` method pushes along."""
    system: str | None = None


def clamp_method(name: str, sae: SAE, feature: int, *old_shape, hook_name: str | None = None) -> Method:
    """Clamp ``feature`` of ``sae`` (error term kept) at its hook (or ``hook_name``); the push sets the value."""
    hook_name = deprecated.positional_hook("steering_comparison.clamp_method(name, sae, feature)", old_shape,
                                           hook_name)
    hook = sae.hook_name if hook_name is None else hook_name
    return Method(name, hook, "clamp", sae=sae, feature=sae.check_feature(feature))


def add_method(name: str, hook_name: str, direction: Float[Tensor, " d_model"]) -> Method:
    """Add ``direction`` (any length: only its direction counts) at ``hook_name``."""
    if not isinstance(direction, Tensor) or direction.ndim != 1:
        raise ValueError("direction must be a 1-d tensor of length d_model")
    length = float(direction.float().norm())
    if not math.isfinite(length) or length == 0:
        raise ValueError("direction must have a finite, non-zero length")
    return Method(name, hook_name, "add", direction=direction.float() / length)


def system_method(name: str, system: str) -> Method:
    """Say the concept in a system prompt, no hook."""
    if not isinstance(system, str) or not system.strip():
        raise ValueError("system must be a non-empty string")
    return Method(name, None, "system", system=system)


def contrastive_directions(model, hook_names: Sequence[str], positive: Sequence[str], negative: Sequence[str],
                           *, progress: bool = True) -> dict[str, Float[Tensor, " d_model"]]:
    """Per hook: the mean activation over the tokens of ``positive`` texts minus that over ``negative`` texts
    (BOS excluded), as ``steer.contrastive_direction`` gives, for every hook in one forward pass per text."""
    if not positive or not negative:
        raise ValueError("positive and negative must each hold at least one text")
    for name in hook_names:
        check_hook_name(model, name)
    means = {}
    for label, texts in (("positive", positive), ("negative", negative)):
        sums = {name: torch.zeros(model.cfg.d_model) for name in hook_names}
        count = 0
        for text in tqdm(texts, desc=f"contrastive: {label} texts", disable=not progress):
            with torch.no_grad():
                _, cache = model.run_with_cache(model.to_tokens(text), names_filter=list(hook_names))
            for name in hook_names:
                sums[name] += cache[name][0, 1:].float().sum(0).cpu()
            count += cache[hook_names[0]].shape[1] - 1
        means[label] = {name: total / count for name, total in sums.items()}
    return {name: means["positive"][name] - means["negative"][name] for name in hook_names}


def role_activations(model, hook_names: Sequence[str], prompts: Sequence[str], system: str, *,
                     max_new_tokens: int = 32, progress: bool = True) -> dict[str, dict[str, Float[Tensor, "n d_model"]]]:
    """The model's activations at each hook while it answers ``prompts`` in the role ``system`` sets
    (``"persona"``) and while it answers them plainly (``"plain"``): its own greedy replies, read over the reply's
    tokens and the position that writes the first of them, all prompts' rows stacked."""
    if not prompts:
        raise ValueError("prompts must hold at least one prompt")
    if not isinstance(system, str) or not system.strip():
        raise ValueError("system must be a non-empty string")
    for name in hook_names:
        check_hook_name(model, name)
    eos = model.tokenizer.eos_token_id
    rows: dict[str, dict[str, list[Tensor]]] = {role: {name: [] for name in hook_names} for role in ("persona", "plain")}
    for prompt in tqdm(prompts, desc="replies in and out of the role", disable=not progress):
        for role, role_system in (("persona", system), ("plain", None)):
            tokens = lm.chat_tokens(model, prompt, role_system)
            with torch.no_grad():
                reply = lm.generate(model, tokens, max_new_tokens, threads=1)[0]
                reply = reply[reply != eos]
                _, cache = model.run_with_cache(torch.cat([tokens[0], reply.to(tokens.device)])[None],
                                                names_filter=list(hook_names))
            first = tokens.shape[1] - 1  # the last prompt position predicts the reply's first token
            for name in hook_names:
                rows[role][name].append(cache[name][0, first:].float().cpu())
    return {role: {name: torch.cat(parts) for name, parts in by_hook.items()} for role, by_hook in rows.items()}


def persona_directions(model, hook_names: Sequence[str], prompts: Sequence[str], system: str, *,
                       max_new_tokens: int = 32, progress: bool = True) -> dict[str, Float[Tensor, " d_model"]]:
    """Per hook: the model's mean activation while it answers ``prompts`` in the role ``system`` sets, minus its
    mean activation while it answers them plainly (:func:`role_activations`; the "persona vector" of Chen et
    al. 2025, *Persona vectors*). Both means are activations the model really produces, in the role and out."""
    acts = role_activations(model, hook_names, prompts, system, max_new_tokens=max_new_tokens, progress=progress)
    return {name: acts["persona"][name].mean(0) - acts["plain"][name].mean(0) for name in hook_names}


def _row_add_hook(activation: Tensor, hook, direction: Tensor, lengths: Tensor) -> Tensor:
    """Add ``lengths[b] * direction`` to row b at every position."""
    push_BD = lengths.to(activation.device, torch.float32)[:, None] * direction.to(activation.device)[None, :]
    return (activation.float() + push_BD[:, None, :]).to(activation.dtype)


def _hooks(method: Method, pushes: Tensor, median_norm: float) -> list[lm.Hook]:
    lengths = pushes * median_norm
    if method.kind == "clamp":
        values = lengths / method.sae.W_dec[method.feature].detach().float().norm()
        ids = torch.full((len(pushes),), method.feature, dtype=torch.long)
        return [(method.hook_name, partial(row_clamp_hook, sae=method.sae, feature_ids=ids, values=values))]
    if method.kind == "add":
        return [(method.hook_name, partial(_row_add_hook, direction=method.direction, lengths=lengths))]
    return []


class Reply(NamedTuple):
    """One greedy reply of one method at one push, with its proxies."""

    method: str
    push: float
    prompt: str
    reply: str
    on_topic: bool
    claims_identity: bool
    about_itself: bool
    fluent: bool
    repetition: float
    perplexity: float

    @property
    def success(self) -> bool:
        """On topic, fluent, still about itself, and no odder to the plain model than ``MAX_PERPLEXITY``."""
        return self.on_topic and self.fluent and self.about_itself and self.perplexity <= MAX_PERPLEXITY


def _perplexities(model, prompt_T: Tensor, replies: Sequence[Tensor]) -> list[float]:
    """The unsteered model's perplexity of each reply after the plain prompt, in one padded pass."""
    kept = [r for r in replies if r.numel()]
    if not kept:
        return [math.nan] * len(replies)
    tokens_BT, scored_BT = continuation_batch([(prompt_T, reply) for reply in kept])
    logprob_B = iter(mean_logprob(model, tokens_BT, scored_BT, []).tolist())
    return [math.exp(-next(logprob_B)) if r.numel() else math.nan for r in replies]


def method_replies(model, method: Method, prompts: Sequence[str], pushes: Sequence[float], median_norm: float, *,
                   concept_words: Sequence[str], identity_noun: str, max_new_tokens: int = 24,
                   progress: bool = True) -> list[Reply]:
    """Greedy replies of ``method`` to each prompt at each push (one batched generation per prompt: row b
    runs at ``pushes[b]``), scored. A system prompt ignores ``pushes`` and answers once per prompt."""
    if not prompts:
        raise ValueError("prompts must hold at least one prompt")
    if method.kind != "system":
        if not pushes or any(not math.isfinite(p) or p < 0 for p in pushes):
            raise ValueError(f"pushes must be finite numbers >= 0, got {list(pushes)!r}")
        check_hook_name(model, method.hook_name)
        if method.kind == "clamp":
            method.sae.check_fits(model, method.hook_name)
    rows = torch.tensor([math.nan] if method.kind == "system" else [float(p) for p in pushes])
    eos = model.tokenizer.eos_token_id
    out = []
    for prompt in tqdm(prompts, desc=method.name, disable=not progress):
        tokens = lm.chat_tokens(model, prompt, method.system)
        with torch.no_grad():
            new_BT = lm.generate(model, tokens.repeat(len(rows), 1), max_new_tokens,
                                 fwd_hooks=_hooks(method, rows, median_norm), threads=1)
        contents = [row[row != eos] for row in new_BT.cpu()]
        texts = [model.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_BT]
        # Fluency is judged after the plain question, without any system prompt the method added.
        perplexity = _perplexities(model, lm.chat_tokens(model, prompt)[0].cpu(), contents)
        for push, text, ppl in zip(rows.tolist(), texts, perplexity):
            out.append(Reply(method.name, push, prompt, text, reply_checks.mentions(text, concept_words),
                             reply_checks.claims_identity(text, identity_noun), bool(_FIRST_PERSON.search(text)),
                             not reply_checks.degenerate(text), reply_checks.repetition(text), ppl))
    return out


class DosePoint(NamedTuple):
    """A method at one push, over all prompts: the share of replies meeting each proxy."""

    method: str
    push: float
    on_topic: float
    claims_identity: float
    about_itself: float
    fluent: float
    success: float
    median_perplexity: float
    mean_repetition: float


def dose_response(replies: Sequence[Reply]) -> list[DosePoint]:
    """Aggregate replies per (method, push), in the order first seen."""
    groups: dict[tuple[str, float], list[Reply]] = {}
    for reply in replies:
        key = (reply.method, "system" if math.isnan(reply.push) else reply.push)
        groups.setdefault(key, []).append(reply)
    points = []
    for (method, _), group in groups.items():
        share = lambda attr: sum(bool(getattr(r, attr)) for r in group) / len(group)  # noqa: E731
        perplexities = torch.tensor([r.perplexity for r in group if math.isfinite(r.perplexity)])
        points.append(DosePoint(method, group[0].push, share("on_topic"), share("claims_identity"),
                                share("about_itself"), share("fluent"), share("success"),
                                float(perplexities.median()) if len(perplexities) else math.nan,
                                sum(r.repetition for r in group) / len(group)))
    return points


def best_settings(points: Sequence[DosePoint]) -> list[DosePoint]:
    """Per method, the push with the most identity claims, then the most successes, then the most replies on
    topic, then the lowest perplexity."""
    def rank(point: DosePoint) -> tuple:
        return point.claims_identity, point.success, point.on_topic, -point.median_perplexity

    best: dict[str, DosePoint] = {}
    for point in points:
        if point.method not in best or rank(point) > rank(best[point.method]):
            best[point.method] = point
    return list(best.values())


def compare(model, methods: Sequence[Method], prompts: Sequence[str], pushes: Sequence[float],
            median_norms: dict[str, float], *, concept_words: Sequence[str], identity_noun: str,
            max_new_tokens: int = 24, progress: bool = True) -> tuple[list[Reply], dict[str, float]]:
    """Every method on every prompt at every push (measured against ``median_norms`` of its own hook): the
    replies, and each method's wall time in seconds."""
    replies, seconds = [], {}
    for method in methods:
        start = time.perf_counter()
        norm = median_norms[method.hook_name] if method.hook_name is not None else math.nan
        replies += method_replies(model, method, prompts, pushes, norm, concept_words=concept_words,
                                  identity_noun=identity_noun, max_new_tokens=max_new_tokens, progress=progress)
        seconds[method.name] = time.perf_counter() - start
    return replies, seconds

SELF_DESCRIPTION_PROMPTS = ("What is your physical form?", "What are you?", "Describe yourself.", "Who are you?",
                            "Tell me about yourself.", "What do you look like?")
"""The prompts the comparison asks: the original demonstration's question and five more about the model itself."""


def standard_methods(model, sae: SAE, *, output_feature: int, detection_feature: int,
                     contrastive: dict[str, Tensor], system: str) -> list[Method]:
    """The head-to-head's methods: the SAE clamp of the feature chosen by its output and of the one chosen by
    detection, the output feature's decoder row added, the contrastive vector at each of its hooks, and the
    system prompt."""
    hook = sae.hook_name
    methods = [clamp_method(f"SAE clamp, output-chosen (feature {output_feature})", sae, output_feature),
               clamp_method(f"SAE clamp, detection-chosen (feature {detection_feature})", sae, detection_feature),
               add_method(f"SAE decoder row added (feature {output_feature})", hook, sae.W_dec[output_feature].detach())]
    methods += [add_method(f"contrastive vector at {name}", name, direction) for name, direction in contrastive.items()]
    return methods + [system_method(f"system prompt: {system!r}", system)]

