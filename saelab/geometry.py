"""How a toy model arranges its features: norms, interference, dimensionality, phase diagrams.

Pure functions of the weight tensor ``W`` (inst, d_hidden, feat), whose column ``W[i, :, f]`` is the direction
feature ``f`` is written to. The definitions follow Elhage et al. (2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from saelab.toy import ToyModel, train_toy_model

# Dimensionalities the paper found features "sticking" to, with the geometry that gives each.
STICKY_FRACTIONS = {1.0: "dedicated", 3 / 4: "tetrahedron", 2 / 3: "triangle", 1 / 2: "antipodal pair",
                    2 / 5: "pentagon", 3 / 8: "square antiprism", 0.0: "not represented"}

PHASES = ("not represented", "dedicated", "superposed")

# The toy training each sweep uses unless told otherwise (``toy.train_toy_model``'s options).
PHASE_DIAGRAM_TRAINING = {"steps": 2000, "batch_size": 512, "lr": 1e-2}
SPARSITY_SWEEP_TRAINING = {"steps": 5000, "batch_size": 1024, "lr": 1e-3}


def as_weight_tensor(W_or_model: Tensor | ToyModel) -> Float[Tensor, "inst d_hidden feat"]:
    """The detached float ``(inst, d_hidden, feat)`` weights of a toy model, or of a ``W`` (a 2-D one gains ``inst``)."""
    W = W_or_model.W if isinstance(W_or_model, ToyModel) else W_or_model
    W = W.detach().float()
    if W.ndim == 2:
        W = W.unsqueeze(0)
    if W.ndim != 3:
        raise ValueError(f"W must have shape (inst, d_hidden, feat) or (d_hidden, feat), got {tuple(W.shape)}")
    return W


def feature_norms(W: Tensor | ToyModel) -> Float[Tensor, "inst feat"]:
    """||W_f||: near 1 when feature f is represented, near 0 when it is dropped."""
    return as_weight_tensor(W).norm(dim=1)


def overlaps(W: Tensor | ToyModel) -> Float[Tensor, "inst feat feat"]:
    """Wᵀ W: diagonal = squared norms, off-diagonal = how much reading one feature picks up another."""
    W = as_weight_tensor(W)
    return W.transpose(1, 2) @ W


def interference(W: Tensor | ToyModel, eps: float = 1e-8) -> Float[Tensor, "inst feat"]:
    """Superposition of each feature: sum over the other features j of (Ŵ_f · W_j)², with Ŵ_f the unit vector."""
    W = as_weight_tensor(W)
    unit = W / (W.norm(dim=1, keepdim=True) + eps)
    projections = unit.transpose(1, 2) @ W  # [i, f, j] = Ŵ_f · W_j
    off_diagonal = projections.pow(2).sum(-1) - torch.diagonal(projections, dim1=1, dim2=2).pow(2)
    return off_diagonal


def dimensionality(W: Tensor | ToyModel, eps: float = 1e-8) -> Float[Tensor, "inst feat"]:
    """Fraction of a dimension each feature gets: D_f = ||W_f||² / sum_j (Ŵ_f · W_j)².

    1 for a feature with a dimension of its own, 1/2 for an antipodal pair, 2/5 for a pentagon, 0 if dropped.
    """
    W = as_weight_tensor(W)
    norms = W.norm(dim=1)
    unit = W / (norms.unsqueeze(1) + eps)
    denominator = (unit.transpose(1, 2) @ W).pow(2).sum(-1)
    return norms.pow(2) / (denominator + eps)


def dimensions_per_feature(W: Tensor | ToyModel) -> Float[Tensor, "inst"]:
    """The model-level D* = d_hidden / ||W||_F²: how many dimensions each represented feature gets on average."""
    W = as_weight_tensor(W)
    return W.shape[1] / W.pow(2).sum(dim=(1, 2))


def classify_feature(W: Tensor | ToyModel, feature: int = -1, norm_threshold: float = 0.5,
                     interference_threshold: float = 0.1) -> list[str]:
    """Per instance: is ``feature`` not represented, given a dimension of its own (dedicated), or superposed?"""
    norms, shared = feature_norms(W)[:, feature], interference(W)[:, feature]
    return [
        "not represented" if n < norm_threshold else ("dedicated" if s < interference_threshold else "superposed")
        for n, s in zip(norms.tolist(), shared.tolist())
    ]


@dataclass
class PhaseDiagram:
    """Outcome of a sweep: ``phase[r][d]`` is the extra feature's fate at ``relative_importance[r]``,
    ``feature_density[d]``; ``norm`` and ``interference`` hold the measurements behind it."""

    feature_density: list[float]
    relative_importance: list[float]
    phase: list[list[str]]
    norm: Float[Tensor, "importance density"]
    interference: Float[Tensor, "importance density"]


def phase_diagram(
    feature_density: list[float],
    relative_importance: list[float],
    *,
    n_features: int = 2,
    d_hidden: int = 1,
    repeats: int = 3,
    seed: int = 0,
    **train_options,
) -> PhaseDiagram:
    """The paper's phase diagram: how the last ("extra") feature is stored as its density and importance vary.

    Every (importance, density) cell is ``repeats`` instances of one batched ToyModel (features 0..n-2 have
    importance 1, the extra feature ``relative_importance``; all share the density). The lowest-loss repeat of
    each cell decides its phase, so a cell is not judged by a run stuck in a local minimum. ``train_options``
    (``steps``, ``batch_size``, ``lr``, ``progress``, ...) go to ``toy.train_toy_model``, over
    ``PHASE_DIAGRAM_TRAINING``.
    """
    if not feature_density or not relative_importance:
        raise ValueError("feature_density and relative_importance must each hold at least one value")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    cells = [(r, d) for r in relative_importance for d in feature_density]
    n_inst = len(cells) * repeats
    importance = torch.ones(n_inst, n_features)
    probability = torch.empty(n_inst, n_features)
    for cell, (r, d) in enumerate(cells):
        rows = slice(cell * repeats, (cell + 1) * repeats)
        importance[rows, -1] = r
        probability[rows] = d
    model = ToyModel(n_features, d_hidden, n_inst, feature_probability=probability, importance=importance, seed=seed)
    history = train_toy_model(model, seed=seed, **{**PHASE_DIAGRAM_TRAINING, **train_options})

    final_loss = history[-max(1, history.shape[0] // 20):].mean(0).view(len(cells), repeats)
    best = final_loss.argmin(dim=1) + torch.arange(len(cells)) * repeats
    W_best = model.W.detach()[best]
    norm = feature_norms(W_best)[:, -1].view(len(relative_importance), len(feature_density))
    shared = interference(W_best)[:, -1].view(len(relative_importance), len(feature_density))
    labels = classify_feature(W_best)
    phase = [labels[r * len(feature_density):(r + 1) * len(feature_density)] for r in range(len(relative_importance))]
    return PhaseDiagram(list(feature_density), list(relative_importance), phase, norm, shared)


def sparsity_sweep(
    feature_probabilities: list[float],
    *,
    n_features: int = 100,
    d_hidden: int = 20,
    importance_decay: float = 0.9,
    seed: int = 0,
    **train_options,
) -> ToyModel:
    """Train one instance per feature probability (the paper's 100 -> 20 sweep), all in one batched model.

    ``train_options`` (``steps``, ``batch_size``, ``lr``, ``progress``, ...) go to ``toy.train_toy_model``, over
    ``SPARSITY_SWEEP_TRAINING``.
    """
    probability = torch.tensor(feature_probabilities, dtype=torch.float32).unsqueeze(1)
    model = ToyModel(n_features, d_hidden, len(feature_probabilities), feature_probability=probability,
                     importance=importance_decay ** torch.arange(n_features, dtype=torch.float32), seed=seed)
    train_toy_model(model, seed=seed, **{**SPARSITY_SWEEP_TRAINING, **train_options})
    return model
