"""Checkers for lesson 06 (interpreting features): a feature's maximum on each text, and its logit effects."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from saelab import deprecated
from saelab.exercises import checking
from saelab.exercises.checking import ExerciseError, check_close, checker, run_learner_function, wrong_answer
from saelab.features import feature_activations


def reference_feature_max_per_text(model, sae, texts: Sequence[str], feature: int, *old_shape) -> torch.Tensor:
    """For each text, the feature's largest activation over its tokens, BOS excluded: shape (n_texts,)."""
    (texts, feature), hook_name = deprecated.hook_first(
        "lesson06.reference_feature_max_per_text(model, sae, texts, feature)", (texts, feature, *old_shape), None,
        old=isinstance(texts, str), takes=2)
    return torch.stack([feature_activations(model, sae, model.to_tokens(text), hook_name=hook_name)[0, 1:, feature]
                        .max() for text in texts])


@checker("feature_max_per_text")
def check_feature_max_per_text(feature_max_per_text, model, sae, texts: Sequence[str], feature: int,
                               *old_shape) -> None:
    """``feature_max_per_text(model, sae, texts, feature)`` -> (n_texts,) maxima, BOS excluded."""
    # In the old shape a hook name came before the texts, and the learner's function took it too.
    (texts, feature), hook_name = deprecated.hook_first(
        "lesson06.check_feature_max_per_text(feature_max_per_text, model, sae, texts, feature)",
        (texts, feature, *old_shape), None, old=isinstance(texts, str), takes=2)
    learner_args = () if hook_name is None else (hook_name,)
    name = sae.check_fits(model, hook_name)
    actual = run_learner_function(feature_max_per_text, model, sae, *learner_args, list(texts), feature,
                                  name="feature_max_per_text")
    per_text = [feature_activations(model, sae, model.to_tokens(text), hook_name=name)[0] for text in texts]
    expected = torch.stack([acts[1:, feature].max() for acts in per_text])
    pre = []
    for text in texts:
        _, cache = model.run_with_cache(model.to_tokens(text), names_filter=[name])
        pre.append(sae.pre_activations(cache[name][0].float())[1:, feature])
    check_close(actual, expected, what="feature_max_per_text(...)", rtol=1e-3, atol=1e-3, hints=[
        (torch.stack([acts[:, feature].max() for acts in per_text]),
         "position 0 (BOS) is included: its huge activation is the attention sink, not the text; slice [1:]"),
        (torch.stack([acts[1:, feature].mean() for acts in per_text]),
         "this is the mean over tokens; a detector asks whether the feature fires anywhere: take the max"),
        (torch.stack([acts[1:, feature].sum() for acts in per_text]),
         "this is the sum over tokens; take the max, so long texts don't score higher just for being long"),
        (torch.stack([p.max() for p in pre]),
         "these are pre-activations: sae.encode applies the TopK (and ReLU), which silences all but k latents"),
        (torch.stack([p.relu().max() for p in pre]),
         "ReLU alone is not the SAE's encoder: this TopK SAE keeps only the k largest latents, use sae.encode"),
    ])


def reference_logit_effects(model, sae, feature: int) -> torch.Tensor:
    """The feature's decoder direction, through the final norm's scale, onto every vocabulary logit: (d_vocab,)."""
    return (sae.W_dec[feature].float() * model.ln_final.w.float()) @ model.W_U.float()


@checker("logit_effects")
def check_logit_effects(logit_effects, model, sae, feature: int) -> None:
    """``logit_effects(model, sae, feature)`` -> (d_vocab,) direct effect of the feature on each next-token logit."""
    with torch.no_grad():
        actual = run_learner_function(logit_effects, model, sae, feature, name="logit_effects")
        expected = reference_logit_effects(model, sae, feature)
        W_dec, W_U, scale = sae.W_dec[feature].float(), model.W_U.float(), model.ln_final.w.float()
        hints = [
            (W_dec @ W_U, ("the final RMSNorm multiplies each dimension by its learned scale (model.ln_final.w) "
                          "before the unembedding: scale the decoder row first")),
            (-expected, "the sign is flipped: a positive effect means the feature raises that token's logit"),
            ((sae.W_enc[:, feature].float() * scale) @ W_U,
             ("this uses the encoder column (what the feature reads); its effect on the output is what it writes: "
             "the decoder row sae.W_dec[feature]")),
        ]
    if isinstance(actual, torch.Tensor) and actual.shape == (sae.cfg.d_in,):
        raise ExerciseError("this has d_model entries: multiply by the unembedding model.W_U (d_model, d_vocab) "
                            "to get one number per vocabulary token")
    check_close(actual, expected, what="logit_effects(model, sae, feature)", rtol=1e-3, atol=1e-3, hints=hints)


def reference_detection_score(maxima: torch.Tensor, is_concept: torch.Tensor, is_unnamed: torch.Tensor) -> torch.Tensor:
    """Per feature: min(recall, recall_unnamed) - false_rate, from (n_texts, d_sae) per-text maxima.

    ``is_concept`` marks the concept's passages, ``is_unnamed`` those of them with no surface word; a feature
    fires on a text when its maximum there is above 0.
    """
    fires = (maxima > 0).float()
    recall = fires[is_concept].mean(0)
    recall_unnamed = fires[is_concept & is_unnamed].mean(0)
    false_rate = fires[~is_concept].mean(0)
    return torch.minimum(recall, recall_unnamed) - false_rate


def _detection_case():
    g = torch.Generator().manual_seed(11)
    n, d = 30, 7
    maxima = torch.rand(n, d, generator=g) * (torch.rand(n, d, generator=g) < 0.5)
    is_concept = torch.arange(n) < 18
    is_unnamed = (torch.arange(n) % 3 == 0)  # some of the concept passages, and some of the others
    maxima[:18, 0] = 0.5  # feature 0: fires on every concept passage
    maxima[~is_unnamed & is_concept, 1] = 2.0  # feature 1: a name-token feature, silent where no name appears
    maxima[is_unnamed & is_concept, 1] = 0.0
    return maxima, is_concept, is_unnamed


@checker("detection_score")
def check_detection_score(detection_score) -> None:
    """``detection_score(maxima, is_concept, is_unnamed)`` -> (d_sae,) scores."""
    maxima, is_concept, is_unnamed = _detection_case()
    expected = reference_detection_score(maxima, is_concept, is_unnamed)
    actual = run_learner_function(detection_score, maxima.clone(), is_concept.clone(), is_unnamed.clone(),
                                  name="detection_score")
    fires = (maxima > 0).float()
    recall, false_rate = fires[is_concept].mean(0), fires[~is_concept].mean(0)
    unnamed_everywhere = fires[is_unnamed].mean(0)
    check_close(actual, expected, what="detection_score(maxima, is_concept, is_unnamed)", hints=[
        (torch.minimum(maxima[is_concept].mean(0), maxima[is_concept & is_unnamed].mean(0))
         - maxima[~is_concept].mean(0),
         ("these are mean activations; detection counts texts: a feature fires on a text when its maximum there "
         "is above 0 ((maxima > 0).float())")),
        (torch.minimum(recall, unnamed_everywhere) - false_rate,
         ("recall_unnamed is over the concept's passages without a surface word (is_concept & is_unnamed), not "
         "every unnamed text")),
        (torch.maximum(recall, fires[is_concept & is_unnamed].mean(0)) - false_rate,
         ("take the smaller of the two recalls (torch.minimum): a name-token feature has a high recall and a zero "
         "recall_unnamed, and must score low")),
        (recall - false_rate, "recall alone rewards a name-token feature: use min(recall, recall_unnamed)"),
        (torch.minimum(recall, fires[is_concept & is_unnamed].mean(0)) - fires.mean(0),
         "the false rate is over the other texts only (~is_concept), not over all of them"),
        (torch.minimum(recall, fires[is_concept & is_unnamed].mean(0)),
         "subtract the false rate: a feature that fires on everything must not score 1"),
    ])


def reference_top_positions(acts: torch.Tensor, k: int) -> torch.Tensor:
    """The (row, pos) of the ``k`` largest activations in (rows, pos), strongest first, position 0 excluded."""
    body = acts[:, 1:]
    flat = body.reshape(-1).topk(k).indices
    return torch.stack([flat // body.shape[1], flat % body.shape[1] + 1], dim=1)


@checker("top_positions")
def check_top_positions(top_positions) -> None:
    """``top_positions(acts, k)`` -> a (k, 2) tensor of (row, pos) pairs."""
    g = torch.Generator().manual_seed(12)
    acts = torch.rand(6, 9, generator=g)
    acts[:, 0] = 5.0  # the BOS position: huge everywhere
    expected = reference_top_positions(acts, 4)
    actual = run_learner_function(top_positions, acts.clone(), 4, name="top_positions")
    if not isinstance(actual, torch.Tensor):
        raise ExerciseError(f"top_positions should return a tensor, got {type(actual).__name__}")
    if actual.shape == (4,):
        raise ExerciseError("these are flat indices into acts.reshape(-1): turn each into (row, pos) with // and % "
                            "by the row length")
    if actual.shape != (4, 2):
        raise ExerciseError(f"top_positions should return shape (k, 2) = (4, 2), got {tuple(actual.shape)}")
    actual = actual.long()
    if torch.equal(actual, expected):
        return
    every = acts.reshape(-1).topk(4).indices
    if torch.equal(actual, torch.stack([every // 9, every % 9], 1)):
        raise ExerciseError("position 0 is included: it is BOS, the attention sink; rank positions 1 onward")
    body = acts[:, 1:].reshape(-1).topk(4).indices
    if torch.equal(actual, torch.stack([body // 8, body % 8], 1)):
        raise ExerciseError("after slicing off position 0, add 1 back to the position so it indexes the full row")
    if torch.equal(actual, torch.stack([body % 8 + 1, body // 8], 1)):
        raise ExerciseError("row and position are swapped: row = flat // (positions per row), pos = flat % ...")
    if torch.equal(actual.flip(0), expected):
        raise ExerciseError("right positions, wrong order: strongest first")
    raise wrong_answer("top_positions", actual.tolist(), expected.tolist())


def reference_activation_histogram(acts: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Counts of the non-zero activations in ``n_bins`` equal bins from 0 to the largest activation."""
    active = acts[acts > 0]
    return torch.histc(active, bins=n_bins, min=0.0, max=float(acts.max()))


@checker("activation_histogram")
def check_activation_histogram(activation_histogram) -> None:
    """``activation_histogram(acts, n_bins)`` -> (n_bins,) counts of the non-zero activations."""
    g = torch.Generator().manual_seed(13)
    acts = (0.5 + torch.rand(500, generator=g).pow(3) * 4) * (torch.rand(500, generator=g) < 0.1)
    expected = reference_activation_histogram(acts, 10)
    actual = run_learner_function(activation_histogram, acts.clone(), 10, name="activation_histogram")
    check_close(actual, expected, what="activation_histogram(acts, 10)", atol=0.5, rtol=0, hints=[
        (torch.histc(acts, bins=10, min=0.0, max=float(acts.max())),
         "the zeros are counted: they pile up in the first bin and hide the shape; keep acts[acts > 0]"),
        (torch.histc(acts[acts > 0], bins=10),
         "bins from the smallest non-zero value: start them at 0 (min=0) and end at the maximum"),
        (torch.histc(acts[acts > 0], bins=10, min=0.0, max=float(acts.max())) / (acts > 0).sum(),
         "return counts, not fractions"),
    ])


def reference_is_concept_feature(unnamed_maxima: torch.Tensor, group_maxima: dict[str, torch.Tensor],
                                 min_recall: float, max_false_rate: float) -> bool:
    """Fires on at least ``min_recall`` of the unnamed passages and at most ``max_false_rate`` of *each* group."""
    recall = (unnamed_maxima > 0).float().mean()
    return bool(recall >= min_recall) and all(bool((values > 0).float().mean() <= max_false_rate)
                                              for values in group_maxima.values())


def _pooled_verdict(unnamed_maxima, group_maxima, min_recall, max_false_rate) -> bool:
    pooled = torch.cat(list(group_maxima.values()))
    return bool((unnamed_maxima > 0).float().mean() >= min_recall) and bool((pooled > 0).float().mean()
                                                                            <= max_false_rate)


def _nonnegative_verdict(unnamed_maxima, group_maxima, min_recall, max_false_rate) -> bool:
    return bool((unnamed_maxima >= 0).float().mean() >= min_recall) and all(
        bool((values >= 0).float().mean() <= max_false_rate) for values in group_maxima.values())


@checker("is_concept_feature")
def check_is_concept_feature(is_concept_feature) -> None:
    """``is_concept_feature(unnamed_maxima, group_maxima, min_recall, max_false_rate)`` -> True or False."""
    unnamed = torch.tensor([0.3, 0.2, 0.0, 0.5, 0.1])  # fires on 4 of 5
    silent = torch.zeros(6)
    bridges = torch.tensor([0.4, 0.3, 0.5, 0.2, 0.0, 0.6])  # fires on 5 of 6 other bridges
    cases = [
        ("a concept feature", unnamed, {"other_bridges": silent, "san_francisco": silent}),
        ("a feature for the word bridge", torch.zeros(5), {"other_bridges": bridges, "san_francisco": silent}),
        ("a feature that fires on the unnamed passages and on 5 of 6 other bridges", unnamed,
         {"other_bridges": bridges, "other_gates": silent, "san_francisco": silent, "golden": silent}),
        ("a feature that fires on 2 of 5 unnamed passages", torch.tensor([0.3, 0.0, 0.0, 0.2, 0.0]),
         {"other_bridges": silent}),
        ("a concept feature with one false alarm", unnamed, {"other_bridges": torch.tensor([0.0] * 5 + [0.1])}),
    ]
    answers = []
    for _, u, groups in cases:
        actual = run_learner_function(is_concept_feature, u.clone(), {k: v.clone() for k, v in groups.items()},
                                      0.5, 0.25, name="is_concept_feature")
        if not isinstance(actual, (bool, torch.Tensor)) or (isinstance(actual, torch.Tensor) and actual.numel() != 1):
            raise ExerciseError(f"is_concept_feature should return True or False, got {actual!r}")
        answers.append(bool(actual))
    expected = [reference_is_concept_feature(u, groups, 0.5, 0.25) for _, u, groups in cases]
    if answers == expected:
        return
    for mistake, hint in ((_pooled_verdict, ("a feature that fires on 5 of 6 other bridges passed: check each "
                                            "group's false rate on its own (pooling the groups hides one it "
                                            "always fires on)")),
                          (_nonnegative_verdict, ("a feature fires where its maximum is above 0: a zero is silence, "
                                                 "so count (values > 0), not (values >= 0)"))):
        if answers == [mistake(u, groups, 0.5, 0.25) for _, u, groups in cases]:
            raise ExerciseError(f"is_concept_feature is not right: {hint}")
    label, want = next((label, want) for (label, _, _), got, want in zip(cases, answers, expected) if got != want)
    raise ExerciseError(f"is_concept_feature is not right on {label}: expected {want}, got {not want}")


def check_prediction_other_bridges(guess, fired: int, total: int) -> bool | None:
    """Predict on how many of the passages about other bridges the named feature fires (0..total)."""
    return _explain_fired(
        "other bridges", guess, fired, total,
        "The slice scores could not tell: every passage about the Golden Gate is about a bridge, so "
        "a feature for bridges in general scores as well there as a feature for this one bridge.")


def check_prediction_unnamed(guess, fired: int, total: int) -> bool | None:
    """Predict on how many of the slice's passages without a surface word the named feature fires (0..total)."""
    return _explain_fired(
        "passages without a surface word", guess, fired, total,
        "Without 'bridge', 'Golden', 'Gate' or 'San Francisco' a word feature has nothing to fire on; "
        "whatever fires here reads something else: the span, the towers, the strait, or the voice.")


def _explain_fired(name: str, guess, fired: int, total: int, explanation: str) -> bool | None:
    """A guess of on how many of ``total`` passages a feature fires: within a sixth of them (at least 1) is right."""
    return checking.explain_prediction(name, guess, f"{fired}/{total}",
                                       correct=checking.guess_within(guess, fired, max(1, total // 6)),
                                       explanation=explanation)
