"""Checkers for lesson 04 (hooks and activations): residual norms from a cache, an editing hook, top tokens."""

from __future__ import annotations

import torch

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
        (torch.cat([post, post[-1:]]), "row 0 should be the embedding (blocks.0.hook_resid_pre): you used "
                                       "hook_resid_post for every row, so everything is shifted by one block"),
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
        ((activation @ unit)[..., None] * unit, "this is the component along the direction; the hook should "
                                               "return what is left after removing it"),
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
