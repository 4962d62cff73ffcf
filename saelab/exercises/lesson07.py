"""Checkers for lesson 07 (steering): the clamp and add hooks, the push fraction and the trained direction's loss,
written by the learner, against saelab's."""

from __future__ import annotations

import torch

from saelab.exercises.checking import (ExerciseError, check_close, checker, one_number, run_learner_function,
                                      wrong_answer)
from saelab.steer import clamp_hook
from saelab.steering_vector import target_loss


def reference_clamp_hook(activation: torch.Tensor, hook, sae, feature: int, value) -> torch.Tensor:
    """Set ``feature`` to ``value`` in the SAE's code at every position, keeping the error term x - SAE(x).

    ``value`` is a number, or a tensor of one value per position (shape ``(..., pos, 1)``).
    """
    if isinstance(value, torch.Tensor):
        current = sae.encode(activation.float())[..., feature:feature + 1]
        return (activation.float() + (value - current) * sae.W_dec[feature].float()).to(activation.dtype)
    return clamp_hook(activation, hook, sae=sae, feature_ids=torch.tensor([feature]), values=torch.tensor([value]))


def _test_activation(sae, feature: int) -> torch.Tensor:
    """Activations built from the SAE's own decoder rows plus noise, with ``feature`` active at a few positions."""
    generator = torch.Generator().manual_seed(7)
    d_sae, d_in = sae.W_dec.shape
    codes = torch.zeros(2, 6, d_sae)
    for b in range(2):
        for p in range(6):
            codes[b, p, torch.randperm(d_sae, generator=generator)[:4]] = torch.rand(4, generator=generator) * 3 + 1
    codes[0, 1:4, feature] = 4.0
    with torch.no_grad():
        clean = codes @ sae.W_dec + sae.b_dec
    return clean + 0.3 * torch.randn(clean.shape, generator=generator)


@checker("clamp_hook")
def check_clamp_hook(learner_clamp_hook, sae, feature: int, value: float) -> None:
    """``clamp_hook(activation, hook, sae, feature, value)`` -> the activation with ``feature`` clamped to ``value``."""
    activation = _test_activation(sae, feature)
    with torch.no_grad():
        actual = run_learner_function(learner_clamp_hook, activation.clone(), None, sae, feature, value,
                                      name="clamp_hook")
        if actual is None:
            raise ExerciseError("the hook returned None: a TransformerLens hook must return the edited activation")
        expected = reference_clamp_hook(activation, None, sae, feature, value)
        codes = sae.encode(activation)
        current = codes[..., feature:feature + 1]
        clamped = codes.clone()
        clamped[..., feature] = value
        direction = sae.W_dec[feature]
        hints = [
            (sae.decode(clamped), "this is the SAE's reconstruction with the feature set: it throws away the error "
                                  "term x - SAE(x), everything the SAE does not capture. Add it back"),
            (activation + value * direction, "you added value x direction on top of what is there: clamping SETS the "
                                             "feature, so add (value - current activation) x direction"),
            (activation + (value - current) * sae.W_enc[:, feature], "the encoder column reads the feature; the "
                                                                      "decoder row sae.W_dec[feature] writes it"),
            (activation - (value - current) * direction, "the sign is flipped: add (value - current) x direction"),
            (activation, "the activation came back unchanged"),
        ]
    check_close(actual, expected, what="the clamped activation", rtol=1e-4, atol=1e-3, hints=hints)
    with torch.no_grad():  # the same answer, said as the clamp's definition: code with f = value, error kept
        error = activation - sae.decode(codes)
        without_error = sae.decode(clamped)
    if not torch.allclose(actual - error, without_error, rtol=1e-4, atol=1e-3):
        raise ExerciseError(f"minus the error term, the result should decode the SAE's code with feature {feature} "
                            f"set to {value} and every other feature as it was")


def reference_add_hook(activation: torch.Tensor, hook, direction: torch.Tensor, alpha: float) -> torch.Tensor:
    """Add ``alpha * direction`` at every position (additive steering)."""
    return activation + alpha * direction.to(activation.dtype)


@checker("add_hook")
def check_add_hook(learner_add_hook) -> None:
    """``add_hook(activation, hook, direction, alpha)`` -> the activation plus ``alpha * direction`` everywhere."""
    generator = torch.Generator().manual_seed(3)
    activation = torch.randn(2, 5, 16, generator=generator) * 4
    direction = torch.randn(16, generator=generator)
    direction = direction / direction.norm() * 2.5  # not unit length: the learner must not rescale it
    alpha = 3.0
    actual = run_learner_function(learner_add_hook, activation.clone(), None, direction.clone(), alpha,
                                  name="add_hook")
    if actual is None:
        raise ExerciseError("the hook returned None: a TransformerLens hook must return the edited activation")
    last_only = activation.clone()
    last_only[:, -1] += alpha * direction
    unit = direction / direction.norm()
    check_close(actual, reference_add_hook(activation, None, direction, alpha), what="the steered activation", hints=[
        (alpha * direction.expand_as(activation), "you returned only alpha x direction: add it to the activation"),
        (activation - alpha * direction, "the sign is flipped: add alpha x direction"),
        (last_only, "you added it at the last position only: steering adds it at every position"),
        (activation + alpha * unit, "you normalised the direction: add alpha x direction as given (its length "
                                    "is part of the strength)"),
        (activation + direction, "alpha is missing: add alpha x direction"),
        (activation, "the activation came back unchanged"),
    ])


def reference_push_fraction(sae, feature: int, value: float, median_norm: float) -> float:
    """How long the clamp's push is where the feature was silent, per median residual norm."""
    return value * float(sae.W_dec[feature].norm()) / median_norm


@checker("push_fraction")
def check_push_fraction(learner_push_fraction, sae) -> None:
    """``push_fraction(sae, feature, value, median_norm)`` -> value x ||W_dec[feature]|| / median_norm."""
    feature, value, median_norm = 3, 0.4, 150.0
    with torch.no_grad():
        saved = sae.W_dec[feature].clone()
        sae.W_dec[feature] *= 7.0  # a decoder row far from unit length, as in a trained SAE that carries scale
        try:
            actual = run_learner_function(learner_push_fraction, sae, feature, value, median_norm,
                                          name="push_fraction")
            expected = reference_push_fraction(sae, feature, value, median_norm)
            row_norm = float(sae.W_dec[feature].norm())
            column_norm = float(sae.W_enc[:, feature].norm())
        finally:
            sae.W_dec[feature] = saved
    if isinstance(actual, torch.Tensor) and actual.numel() == 1:
        actual = float(actual)
    if not isinstance(actual, (int, float)):
        raise ExerciseError(f"push_fraction should return one number, got {type(actual).__name__}")
    hints = [(value / median_norm, "the decoder row's length is missing: the push is value x ||W_dec[feature]||"),
             (value * row_norm, "divide by median_norm: the push is measured in residual norms"),
             (value * column_norm / median_norm, "use the decoder row W_dec[feature] (what the clamp writes), not "
                                                 "the encoder column"),
             (value * row_norm ** 2 / median_norm, "||W_dec[feature]|| is a length: take the square root of the sum of "
                                                   "squares (torch's .norm())")]
    if abs(actual - expected) <= 1e-4 * abs(expected):
        return
    for wrong, hint in hints:
        if abs(actual - wrong) <= 1e-4 * max(abs(wrong), 1e-12):
            raise ExerciseError(f"push_fraction is not right: {hint}")
    raise wrong_answer("push_fraction", f"{actual:.4g}", f"{expected:.4g}")


def reference_target_loss(logits: torch.Tensor, tokens: torch.Tensor, is_target: torch.Tensor) -> torch.Tensor:
    """Mean negative log-probability per target token, each predicted from the position before it."""
    return target_loss(logits, tokens, is_target)


@checker("target_loss")
def check_target_loss(learner_target_loss) -> None:
    """``target_loss(logits, tokens, is_target)`` -> the mean cross-entropy of the target tokens, one number."""
    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(3, 9, 20, generator=generator) * 2
    tokens = torch.randint(0, 20, (3, 9), generator=generator)
    is_target = torch.zeros(3, 9, dtype=torch.bool)
    is_target[0, 4:9], is_target[1, 3:7], is_target[2, 5:8] = True, True, True  # rows of different lengths
    actual = one_number(run_learner_function(learner_target_loss, logits.clone(), tokens.clone(), is_target.clone(),
                                             name="target_loss"), "target_loss", "average over the target tokens")
    logprobs = logits.log_softmax(-1)
    shifted = logprobs[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    mask = is_target[:, 1:].float()
    unshifted = logprobs.gather(-1, tokens[..., None])[..., 0]
    hints = [
        (-(unshifted * is_target).sum() / is_target.sum(),
         "the logits at position t predict the token at t + 1: compare logits[:, :-1] with tokens[:, 1:]"),
        ((shifted * mask).sum() / mask.sum(), "the sign is flipped: the loss is the NEGATIVE log-probability"),
        (-(shifted * mask).sum(), "that is the sum: divide by the number of target tokens for a mean"),
        (-shifted.mean(), "you averaged over every token: only the target's tokens count (use is_target)"),
        (-(logits[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0] * mask).sum() / mask.sum(),
         "take log_softmax of the logits first: raw logits are not log-probabilities"),
    ]
    expected = reference_target_loss(logits, tokens, is_target)
    check_close(actual, expected, what="target_loss", hints=[(h.reshape(()), text) for h, text in hints])
