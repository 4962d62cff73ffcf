"""Checkers for lesson 02 (toy models of superposition): interference, dimensionality, dimensions per feature."""

from __future__ import annotations

import torch

from saelab import geometry
from saelab.exercises.checking import ExerciseError, check_close, checker, run_learner_function


def _weights() -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    W = torch.randn(4, 3, 8, generator=generator)
    W[:, :, -1] *= 0.01  # a nearly dropped feature, where a missing normalisation shows
    return W


def _unit(W: torch.Tensor) -> torch.Tensor:
    return W / W.norm(dim=1, keepdim=True)


def _check_dropped_feature(function, name: str) -> None:
    """A feature the model dropped entirely (W_f = 0) must come out 0, as the lesson says, not NaN."""
    W = _weights()
    W[:, :, 0] = 0.0
    actual = run_learner_function(function, W.clone(), name=name)
    column = actual[:, 0] if isinstance(actual, torch.Tensor) and actual.ndim == 2 else None
    if column is not None and not torch.isfinite(column).all():
        raise ExerciseError(f"{name}(W) is NaN for a dropped feature (W_f = 0): W_f / ||W_f|| is 0/0 there; add a "
                            f"small eps to the norm (e.g. 1e-8) so that a dropped feature gives 0")


@checker("interference")
def check_interference(interference) -> None:
    """``interference(W)``, W (inst, d_hidden, feat) -> (inst, feat): sum over j != f of (Ŵ_f · W_j)²."""
    W = _weights()
    expected = geometry.interference(W)
    dots = _unit(W).transpose(1, 2) @ W
    raw = W.transpose(1, 2) @ W
    actual = run_learner_function(interference, W.clone(), name="interference")
    check_close(actual, expected, what="interference(W)", atol=1e-4, hints=[
        (dots.pow(2).sum(-1), "the sum should skip j = f: a feature does not interfere with itself"),
        (raw.pow(2).sum(-1) - torch.diagonal(raw, dim1=1, dim2=2).pow(2),
         "normalise W_f to a unit vector Ŵ_f before the dot products"),
        (dots.sum(-1) - torch.diagonal(dots, dim1=1, dim2=2), "square each dot product before summing"),
        (dots.abs().sum(-1) - torch.diagonal(dots, dim1=1, dim2=2).abs(), "square each dot product before summing"),
    ])
    _check_dropped_feature(interference, "interference")


@checker("dimensionality")
def check_dimensionality(dimensionality) -> None:
    """``dimensionality(W)`` -> (inst, feat): D_f = ||W_f||² / sum_j (Ŵ_f · W_j)²."""
    W = _weights()
    expected = geometry.dimensionality(W)
    norms2 = W.norm(dim=1).pow(2)
    dots = _unit(W).transpose(1, 2) @ W
    raw = W.transpose(1, 2) @ W
    actual = run_learner_function(dimensionality, W.clone(), name="dimensionality")
    check_close(actual, expected, what="dimensionality(W)", atol=1e-4, hints=[
        (1 / expected, "your ratio is upside down: ||W_f||² goes in the numerator"),
        (norms2 / raw.pow(2).sum(-1), "normalise W_f to a unit vector Ŵ_f inside the dot products"),
        (norms2 / (dots.pow(2).sum(-1) - torch.diagonal(dots, dim1=1, dim2=2).pow(2)),
         "the denominator's sum includes j = f (the feature's own ||W_f||²)"),
        (norms2 / dots.abs().sum(-1), "square the dot products in the denominator"),
    ])
    _check_dropped_feature(dimensionality, "dimensionality")


@checker("dimensions_per_feature")
def check_dimensions_per_feature(dimensions_per_feature) -> None:
    """``dimensions_per_feature(W)`` -> (inst,): D* = d_hidden / ||W||_F²."""
    W = _weights()
    expected = geometry.dimensions_per_feature(W)
    actual = run_learner_function(dimensions_per_feature, W.clone(), name="dimensions_per_feature")
    check_close(actual, expected, what="dimensions_per_feature(W)", atol=1e-5, hints=[
        (1 / expected, "your ratio is upside down: it is d_hidden divided by ||W||_F²"),
        (W.shape[1] / W.pow(2).sum(dim=(1, 2)).sqrt(), "use the squared Frobenius norm ||W||_F², not ||W||_F"),
        (W.shape[2] / W.pow(2).sum(dim=(1, 2)), "the numerator is d_hidden (W.shape[1]), not n_features"),
    ])
