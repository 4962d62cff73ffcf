"""Checkers for lesson 04 (hooks and activations): residual norms from a cache, an editing hook, top tokens."""

from __future__ import annotations

import torch

from saelab.exercises import checking
from saelab.exercises.checking import ExerciseError, check_close, checker, run_learner_function


def reference_residual_norms(cache, n_layers: int) -> torch.Tensor:
    """Norm of the residual stream before each block and after the last: (n_layers + 1, pos) for one prompt."""
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    names.append(f"blocks.{n_layers - 1}.hook_resid_post")
    return torch.stack([cache[name][0].norm(dim=-1) for name in names])


@checker("residual_norms")
def check_residual_norms(residual_norms, cache, n_layers: int) -> None:
    """``residual_norms(cache, n_layers)`` -> (n_layers + 1, pos) norms for a one-prompt cache."""
    expected = reference_residual_norms(cache, n_layers)
    actual = run_learner_function(residual_norms, cache, n_layers, name="residual_norms")
    resid = torch.stack([cache[f"blocks.{layer}.hook_resid_pre"][0] for layer in range(n_layers)]
                        + [cache[f"blocks.{n_layers - 1}.hook_resid_post"][0]])
    if isinstance(actual, torch.Tensor) and actual.shape == (n_layers, expected.shape[1]):
        raise ExerciseError(f"residual_norms has {n_layers} rows; it needs n_layers + 1 = {n_layers + 1}: the "
                            "stream before each block AND after the last one (blocks.{n_layers-1}.hook_resid_post)")
    if isinstance(actual, torch.Tensor) and actual.shape == (n_layers + 1, resid.shape[-1]):
        raise ExerciseError("residual_norms has one value per d_model dimension: take the norm over the last "
                            "dimension (d_model), keeping one number per token position")
    post = torch.stack([cache[f"blocks.{layer}.hook_resid_post"][0].norm(dim=-1) for layer in range(n_layers)])
    check_close(actual, expected, what="residual_norms(cache, n_layers)", rtol=1e-4, atol=1e-3, hints=[
        (resid.pow(2).sum(-1), "these are squared norms: take the square root (or use .norm(dim=-1))"),
        (resid.abs().sum(-1), "this is the L1 norm (sum of absolute values); the length of a vector is the L2 norm"),
        (resid.mean(-1), "this is the mean of the entries, not the vector's length: use .norm(dim=-1)"),
        (torch.cat([post, post[-1:]]), ("row 0 should be the embedding (blocks.0.hook_resid_pre): you used "
                                       "hook_resid_post for every row, so everything is shifted by one block")),
    ])


def reference_ablate_direction(activation: torch.Tensor, hook, direction: torch.Tensor) -> torch.Tensor:
    """Remove the component along ``direction`` from every position's residual vector."""
    unit = direction / direction.norm()
    return activation - (activation @ unit)[..., None] * unit


@checker("ablate_direction_hook")
def check_ablate_direction(ablate_direction_hook) -> None:
    """``ablate_direction_hook(activation, hook, direction)`` -> the activation with that direction projected out."""
    generator = torch.Generator().manual_seed(4)
    activation = torch.randn(2, 5, 16, generator=generator) * 10
    direction = torch.randn(16, generator=generator) * 3  # deliberately not unit length
    expected = reference_ablate_direction(activation, None, direction)
    actual = run_learner_function(ablate_direction_hook, activation.clone(), None, direction.clone(),
                                  name="ablate_direction_hook")
    if actual is None:
        raise ExerciseError("the hook returned None: a TransformerLens hook must return the (edited) activation, "
                            "otherwise the model keeps the original one")
    raw = activation - (activation @ direction)[..., None] * direction
    unit = direction / direction.norm()
    check_close(actual, expected, what="the edited activation", rtol=1e-4, atol=1e-3, hints=[
        (activation, "the activation came back unchanged: subtract its component along the direction"),
        (raw, "the direction is not unit length: divide it by its norm before projecting"),
        (activation + (activation @ unit)[..., None] * unit, "you added the projection: subtract it instead"),
        (activation - (activation @ unit).sum(-1, keepdim=True)[..., None] * unit,
         "project each token's vector separately (activation @ unit gives one number per position)"),
        ((activation @ unit)[..., None] * unit, ("this is the component along the direction; the hook should "
                                               "return what is left after removing it")),
    ])
    if (actual @ unit).abs().max() > 1e-3 * activation.norm(dim=-1).max():
        raise ExerciseError("the result still has a component along the direction")


@checker("top_tokens")
def check_top_tokens(top_tokens) -> None:
    """``top_tokens(acts_NM, neuron, k)`` -> the row indices of the k largest activations of that neuron."""
    generator = torch.Generator().manual_seed(5)
    acts = torch.randn(200, 12, generator=generator)
    acts[17, 3] = -9.0  # a strongly negative value: the largest |activation| but not the largest activation
    expected = acts[:, 3].topk(6).indices
    actual = run_learner_function(top_tokens, acts.clone(), 3, 6, name="top_tokens")
    if not isinstance(actual, torch.Tensor):
        raise ExerciseError(f"top_tokens should return a tensor of token indices, got {type(actual).__name__}")
    if actual.shape == expected.shape and torch.equal(actual.long(), expected):
        return
    if actual.shape == (6,) and torch.equal(actual, acts[3].topk(6).indices):
        raise ExerciseError("you took the top of row 3 (one token's neurons); index the neuron's column: "
                            "acts_NM[:, neuron]")
    if actual.shape == (6,) and torch.equal(actual, acts[:, 3].abs().topk(6).indices):
        raise ExerciseError("you ranked by absolute value; a neuron 'fires' when its activation is large and "
                            "positive")
    if actual.shape == (6,) and torch.equal(actual, (-acts[:, 3]).topk(6).indices):
        raise ExerciseError("these are the smallest activations: use topk (largest=True)")
    if actual.shape == (6,) and torch.equal(actual.sort().values, expected.sort().values):
        raise ExerciseError("right tokens, wrong order: return them strongest first (topk does this)")
    check_close(actual.long(), expected, what="top_tokens(acts_NM, 3, 6)", atol=0, rtol=0)


def check_prediction_sink(guess, ratio: float) -> bool | None:
    """Predict how much longer position 0's residual vector is than a typical token's after 16 blocks:
    (a) about as long, (b) about 10x, (c) about 100x or more."""
    answer = "a" if ratio < 3 else "b" if ratio < 30 else "c"
    return checking.explain_prediction(
        "how long is position 0", guess, f"{ratio:,.0f}x the median token",
        correct=checking.letter_of(guess) == answer,
        explanation=f"The answer is ({answer}). Position 0 is the attention sink: heads with nothing to attend "
                    "to park their attention there, and the model gives it a huge, nearly constant vector.")


def check_prediction_lens_layer(guess, first_layer: int | None, n_layers: int) -> bool | None:
    """Predict the first layer after which " Paris" is the logit lens's top token (a number 0..n_layers)."""
    if first_layer is None:
        return checking.explain_prediction("logit lens layer", guess, "never", correct=False,
                                           explanation="Paris never became the top token on this prompt.")
    return checking.explain_prediction(
        "logit lens layer", guess, f"after {first_layer} of {n_layers} blocks",
        correct=checking.guess_within(guess, first_layer, 3),
        explanation="Early layers still hold the current token and its surface statistics; the answer appears "
                    "late, when the last blocks have moved the fact into the directions the unembedding reads "
                    "(within 3 layers counts as right).")


def reference_store_last_position(activation: torch.Tensor, hook, store: dict) -> torch.Tensor:
    """A reading hook: keep a copy of the last position's vector, ``store[hook.name]`` (batch, d_model)."""
    store[hook.name] = activation[:, -1].detach().clone()
    return activation


class _FakeHook:
    def __init__(self, name: str):
        self.name = name


@checker("store_last_position")
def check_store_last_position(store_last_position) -> None:
    """``store_last_position(activation, hook, store)`` stores a copy of ``activation[:, -1]`` and changes nothing."""
    generator = torch.Generator().manual_seed(6)
    activation = torch.randn(2, 5, 8, generator=generator)
    original = activation.clone()
    store: dict = {}
    returned = run_learner_function(store_last_position, activation, _FakeHook("blocks.3.hook_resid_post"), store,
                                    name="store_last_position")
    if returned is None:
        raise ExerciseError("the hook returned None: return the activation itself, so the model carries on with it")
    if not isinstance(returned, torch.Tensor) or returned.shape != original.shape or not torch.equal(returned,
                                                                                                      original):
        raise ExerciseError("a reading hook must return the activation unchanged; yours changed it")
    if "blocks.3.hook_resid_post" not in store:
        raise ExerciseError(f"store the vector under hook.name ('blocks.3.hook_resid_post'); store has keys "
                            f"{list(store)}")
    kept = store["blocks.3.hook_resid_post"]
    if isinstance(kept, torch.Tensor) and kept.shape == original.shape:
        raise ExerciseError("you stored every position: keep only the last one, activation[:, -1] (batch, d_model)")
    if isinstance(kept, torch.Tensor) and kept.shape == original[:, 0].shape and torch.equal(kept, original[:, 0]):
        raise ExerciseError("this is position 0 (the BOS attention sink): the last position is activation[:, -1]")
    if isinstance(kept, torch.Tensor) and kept.shape == original[0].shape:
        raise ExerciseError("keep the batch dimension: activation[:, -1] is (batch, d_model); activation[0] or "
                            "activation[-1] picks a prompt, not a position")
    check_close(kept, original[:, -1], what="the stored vector")
    activation.add_(1.0)  # the model's later in-place edits must not reach the stored copy
    if torch.equal(kept, activation[:, -1]):
        raise ExerciseError("the stored vector changes when the model edits the activation in place: store "
                            "activation[:, -1].detach().clone(), a copy")


def reference_logit_lens(resid: torch.Tensor, ln_scale: torch.Tensor, W_U: torch.Tensor, eps: float) -> torch.Tensor:
    """Read residual vectors (..., d_model) as next-token logits (..., d_vocab): the final RMSNorm, then W_U."""
    normalised = resid / (resid.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return (normalised * ln_scale) @ W_U


def _lens_case():
    generator = torch.Generator().manual_seed(7)
    resid = torch.randn(3, 16, generator=generator) * 0.8 + 0.3
    ln_scale = 0.5 + torch.rand(16, generator=generator)
    W_U = torch.randn(16, 40, generator=generator)
    return resid, ln_scale, W_U, 0.2  # a large eps, so that where it goes shows


@checker("logit_lens")
def check_logit_lens(logit_lens) -> None:
    """``logit_lens(resid, ln_scale, W_U, eps)`` -> the logits the final norm and unembedding give ``resid``."""
    resid, ln_scale, W_U, eps = _lens_case()
    expected = reference_logit_lens(resid, ln_scale, W_U, eps)
    actual = run_learner_function(logit_lens, resid.clone(), ln_scale.clone(), W_U.clone(), eps, name="logit_lens")
    rms = (resid.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    centred = resid - resid.mean(-1, keepdim=True)
    check_close(actual, expected, what="logit_lens(resid, ln_scale, W_U, eps)", rtol=1e-4, atol=1e-3, hints=[
        (resid @ W_U, ("the residual goes through the final RMSNorm before the unembedding: divide by its RMS and "
                      "multiply by ln_scale")),
        ((resid / rms) @ W_U, "the final norm also multiplies each coordinate by its learned scale (ln_scale)"),
        ((resid * ln_scale) @ W_U, "divide by the RMS, sqrt(mean(x^2) + eps), before scaling"),
        ((resid / resid.norm(dim=-1, keepdim=True) * ln_scale) @ W_U,
         ("RMSNorm divides by the root *mean* square, sqrt(mean(x^2) + eps), not by the norm (which is sqrt(d) "
         "times larger)")),
        ((centred / (centred.pow(2).mean(-1, keepdim=True) + eps).sqrt() * ln_scale) @ W_U,
         "that is LayerNorm: RMSNorm does not subtract the mean"),
        ((resid / (resid.pow(2).mean(-1, keepdim=True).sqrt() + eps) * ln_scale) @ W_U,
         "eps goes inside the square root: sqrt(mean(x^2) + eps)"),
        ((resid / resid.pow(2).mean(-1, keepdim=True).sqrt() * ln_scale) @ W_U,
         "add eps under the square root, sqrt(mean(x^2) + eps), as the model's norm does"),
    ])


def reference_direct_logit_attribution(outputs: torch.Tensor, final_resid: torch.Tensor, ln_scale: torch.Tensor,
                                       unembed_column: torch.Tensor, eps: float) -> torch.Tensor:
    """Each component's output (n_components, d_model), added to the final residual, read by one token's logit.

    The final norm's divisor is the *final* residual's RMS, the same for every component, so the pieces add up
    to the token's logit.
    """
    rms = (final_resid.pow(2).mean(-1) + eps).sqrt()
    return outputs @ (ln_scale * unembed_column) / rms


@checker("direct_logit_attribution")
def check_direct_logit_attribution(direct_logit_attribution) -> None:
    """``direct_logit_attribution(outputs, final_resid, ln_scale, unembed_column, eps)`` -> (n_components,)."""
    generator = torch.Generator().manual_seed(8)
    outputs = torch.randn(5, 16, generator=generator) * 3
    final_resid = outputs.sum(0)
    ln_scale = 0.5 + torch.rand(16, generator=generator)
    column = torch.randn(16, generator=generator)
    eps = 1e-5
    expected = reference_direct_logit_attribution(outputs, final_resid, ln_scale, column, eps)
    actual = run_learner_function(direct_logit_attribution, outputs.clone(), final_resid.clone(), ln_scale.clone(),
                                  column.clone(), eps, name="direct_logit_attribution")
    rms = (final_resid.pow(2).mean() + eps).sqrt()
    own_rms = (outputs.pow(2).mean(-1) + eps).sqrt()
    check_close(actual, expected, what="direct_logit_attribution(...)", rtol=1e-4, atol=1e-3, hints=[
        (outputs @ column, ("the logit reads the residual through the final norm: scale by ln_scale and divide by "
                           "the final residual's RMS")),
        (outputs @ column / rms, ("the final norm multiplies by its learned scale: the token reads ln_scale * "
                                 "unembed_column")),
        (outputs @ (ln_scale * column), "divide by the final residual's RMS, sqrt(mean(final_resid^2) + eps)"),
        (outputs @ (ln_scale * column) / own_rms,
         ("divide every component by the same number, the RMS of the final residual: the norm sees only the sum, "
         "and only then do the pieces add up to the logit")),
    ])
    total = reference_logit_lens(final_resid, ln_scale, column[:, None], eps)[0]
    if not torch.allclose(actual.sum(), total, atol=1e-3, rtol=1e-4):
        raise ExerciseError("the pieces should add up to the token's logit")
