"""Checkers for lesson 01 (superposition in 2D): the forward pass, the loss, sparse inputs."""

from __future__ import annotations

import torch

from saelab.exercises.checking import ExerciseError, check_close, checker, run_learner_function


def _weights(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    W = torch.randn(3, 2, 5, generator=generator)
    b = torch.randn(3, 5, generator=generator) * 0.3
    x = torch.rand(16, 3, 5, generator=generator) * (torch.rand(16, 3, 5, generator=generator) < 0.5)
    return W, b, x


@checker("forward")
def check_forward(forward) -> None:
    """``forward(W, b, x)`` with W (inst, d_hidden, feat), b (inst, feat), x (batch, inst, feat) -> x'."""
    W, b, x = _weights()
    hidden = torch.einsum("ihf,bif->bih", W, x)
    linear = torch.einsum("ihf,bih->bif", W, hidden) + b
    expected = torch.relu(linear)
    actual = run_learner_function(forward, W.clone(), b.clone(), x.clone(), name="forward")
    check_close(actual, expected, what="forward(W, b, x)", hints=[
        (linear, "this is Wᵀ W x + b without the final ReLU — did you forget the ReLU?"),
        (torch.relu(linear - b), "the bias b is missing: add it before the ReLU"),
        (torch.relu(linear - b) + b, "add the bias before the ReLU, not after it"),
        (torch.relu(torch.einsum("ihf,bih->bif", W, torch.relu(hidden)) + b),
         "the hidden layer h = W x has no ReLU in this model (that is the 'relu_hidden' variant)"),
        (torch.relu(torch.einsum("ihf,bih->bif", W, hidden)), "the bias b is missing: add it before the ReLU"),
    ])


@checker("importance_weighted_loss")
def check_loss(importance_weighted_loss) -> None:
    """``importance_weighted_loss(x, x_hat, importance)`` -> one loss per instance, shape (inst,)."""
    _, _, x = _weights(1)
    x_hat = x + 0.1 * torch.randn_like(x)
    importance = 0.9 ** torch.arange(5.0).expand(3, 5)
    error = (x - x_hat) ** 2
    expected = (importance * error).mean(dim=(0, 2))
    actual = run_learner_function(importance_weighted_loss, x, x_hat, importance.clone(),
                                  name="importance_weighted_loss")
    if isinstance(actual, torch.Tensor) and actual.ndim == 0:
        raise ExerciseError("importance_weighted_loss returned one number; it should return one loss per "
                            "instance, shape (inst,): average over batch and features only")
    check_close(actual, expected, what="importance_weighted_loss", hints=[
        (error.mean(dim=(0, 2)), "the importance weights are missing: multiply each squared error by importance"),
        ((importance * error).sum(dim=(0, 2)), "use the mean over batch and features, not the sum"),
        ((importance * error).sum(dim=2).mean(0), "average over features too (the reference takes the mean, "
                                                  "so losses stay comparable across feature counts)"),
        ((importance * (x - x_hat).abs()).mean(dim=(0, 2)), "square the error instead of taking its absolute value"),
    ])


@checker("sparse_batch")
def check_sparse_batch(sparse_batch) -> None:
    """``sparse_batch(batch_size, n_inst, n_features, feature_probability)``: uniform magnitudes, each on with p."""
    torch.manual_seed(0)
    p = 0.1
    actual = run_learner_function(sparse_batch, 20000, 2, 5, p, name="sparse_batch")
    if not isinstance(actual, torch.Tensor) or actual.shape != (20000, 2, 5):
        shape = tuple(actual.shape) if isinstance(actual, torch.Tensor) else type(actual).__name__
        raise ExerciseError(f"sparse_batch should return a tensor of shape (batch, inst, feat) = (20000, 2, 5), "
                            f"got {shape}")
    active = (actual != 0).float().mean().item()
    if abs(active - (1 - p)) < 0.02:
        raise ExerciseError(f"{active:.0%} of entries are non-zero, but features should be active with probability "
                            f"{p}: the comparison is flipped (keep a value when rand < p)")
    if abs(active - p) > 0.01:
        raise ExerciseError(f"{active:.1%} of entries are non-zero; with feature_probability={p} about {p:.0%} should be")
    values = actual[actual != 0]
    if values.min() < 0 or values.max() > 1:
        raise ExerciseError("active features should have magnitudes uniform in [0, 1]; yours leave that range")
    if abs(values.mean().item() - 0.5) > 0.02:
        raise ExerciseError(f"active magnitudes average {values.mean().item():.2f}, uniform in [0, 1] averages 0.5: "
                            "draw them with torch.rand")
    if (actual[:, 0] == actual[:, 1]).all():
        raise ExerciseError("both instances received identical data: draw independent values for every instance")
