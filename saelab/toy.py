"""Toy models of superposition (Elhage et al., 2022): more sparse features than hidden dimensions.

A ``ToyModel`` holds ``n_inst`` independent models trained side by side (one batched tensor), each mapping
``n_features`` -> ``d_hidden`` -> ``n_features``:

    relu_output  (the paper's main model)   h = W x,        x' = ReLU(Wᵀ h + b)
    linear                                  h = W x,        x' = Wᵀ h + b
    relu_hidden  (a privileged basis)       h = ReLU(W x),  x' = ReLU(Wᵀ h + b)

Shape letters used in names: B batch, I instance, F feature, H hidden.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from saelab.deprecated import renamed
from saelab.threads import torch_threads

Variant = Literal["relu_output", "linear", "relu_hidden"]
VARIANTS = ("relu_output", "linear", "relu_hidden")


def _per_instance_feature(value: float | Tensor, name: str, n_inst: int, n_features: int) -> Tensor:
    """Broadcast a float, a (feat,), (inst, 1) or (inst, feat) tensor to (inst, feat), or say what fits."""
    tensor = torch.as_tensor(value, dtype=torch.float32)
    try:
        return torch.broadcast_to(tensor, (n_inst, n_features)).clone()
    except RuntimeError:
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)}, which does not broadcast to (n_inst, n_features) = "
            f"({n_inst}, {n_features}); give a float, a ({n_features},) tensor or an ({n_inst}, {n_features}) tensor"
        ) from None


class ToyModel(nn.Module):
    """``n_inst`` toy models of superposition, trained together.

    Args:
        n_features: number of input features (more than ``d_hidden``: that is the point).
        d_hidden: width of the bottleneck.
        n_inst: independent instances (different seeds or settings), the leading ``inst`` axis everywhere.
        feature_probability: chance that a feature is active in a sample, in (0, 1]; a float or a tensor
            broadcast to (inst, feat). ``1 - feature_probability`` is the paper's sparsity S.
        importance: weight of each feature in the loss, >= 0; float or tensor broadcast to (inst, feat).
        variant: ``"relu_output"``, ``"linear"`` or ``"relu_hidden"`` (see the module docstring).
        n_correlated_pairs: the first ``2 * n`` features come in pairs that are always active together.
        n_anticorrelated_pairs: the next ``2 * n`` features come in pairs that are never active together.
        seed: seeds the initial weights (None: torch's global generator).
    """

    def __init__(
        self,
        n_features: int,
        d_hidden: int,
        n_inst: int = 1,
        *,
        feature_probability: float | Tensor = 1.0,
        importance: float | Tensor = 1.0,
        variant: Variant = "relu_output",
        n_correlated_pairs: int = 0,
        n_anticorrelated_pairs: int = 0,
        seed: int | None = None,
    ):
        super().__init__()
        for name, value in [("n_features", n_features), ("d_hidden", d_hidden), ("n_inst", n_inst)]:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if d_hidden >= n_features:
            raise ValueError(
                f"d_hidden must be smaller than n_features for superposition (got d_hidden={d_hidden}, "
                f"n_features={n_features})"
            )
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
        if n_correlated_pairs < 0 or n_anticorrelated_pairs < 0:
            raise ValueError("n_correlated_pairs and n_anticorrelated_pairs must be >= 0")
        if 2 * (n_correlated_pairs + n_anticorrelated_pairs) > n_features:
            raise ValueError(
                f"n_correlated_pairs + n_anticorrelated_pairs must be at most n_features / 2 = {n_features // 2}"
            )

        probability = _per_instance_feature(feature_probability, "feature_probability", n_inst, n_features)
        if not torch.all((probability > 0) & (probability <= 1)):
            raise ValueError(f"feature_probability must be in (0, 1], got values from "
                             f"{probability.min().item():g} to {probability.max().item():g}")
        importance_IF = _per_instance_feature(importance, "importance", n_inst, n_features)
        if not torch.all(importance_IF >= 0) or not torch.isfinite(importance_IF).all():
            raise ValueError(f"importance must be finite and >= 0, got a minimum of {importance_IF.min().item():g}")
        anti = slice(2 * n_correlated_pairs, 2 * (n_correlated_pairs + n_anticorrelated_pairs))
        if n_anticorrelated_pairs and torch.any(probability[:, anti] > 0.5):
            raise ValueError("feature_probability must be <= 0.5 for anticorrelated pairs (one of the two is active "
                             "with probability 2p)")

        self.n_features, self.d_hidden, self.n_inst, self.variant = n_features, d_hidden, n_inst, variant
        self.n_correlated_pairs, self.n_anticorrelated_pairs = n_correlated_pairs, n_anticorrelated_pairs
        self.register_buffer("feature_probability", probability)
        self.register_buffer("importance", importance_IF)

        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        std = math.sqrt(2.0 / (d_hidden + n_features))  # Xavier-normal, per instance
        self.W: Float[Tensor, "inst d_hidden feat"] = nn.Parameter(
            torch.randn(n_inst, d_hidden, n_features, generator=generator) * std
        )
        self.b_final: Float[Tensor, "inst feat"] = nn.Parameter(torch.zeros(n_inst, n_features))

    def hidden(self, x: Float[Tensor, "batch inst feat"]) -> Float[Tensor, "batch inst d_hidden"]:
        """The bottleneck activations h (after the ReLU for ``relu_hidden``)."""
        self._check_input(x)
        h_IBH = torch.bmm(x.transpose(0, 1), self.W.transpose(1, 2))
        if self.variant == "relu_hidden":
            h_IBH = torch.relu(h_IBH)
        return h_IBH.transpose(0, 1)

    def forward(self, x: Float[Tensor, "batch inst feat"]) -> Float[Tensor, "batch inst feat"]:
        h_IBH = self.hidden(x).transpose(0, 1)
        out_IBF = torch.baddbmm(self.b_final.unsqueeze(1), h_IBH, self.W)
        if self.variant != "linear":
            out_IBF = torch.relu(out_IBF)
        return out_IBF.transpose(0, 1)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 3 or x.shape[1:] != (self.n_inst, self.n_features):
            raise ValueError(f"x must have shape (batch, n_inst={self.n_inst}, n_features={self.n_features}), "
                             f"got {tuple(x.shape)}")

    def generate_batch(self, batch_size: int, generator: torch.Generator | None = None) -> Float[Tensor, "batch inst feat"]:
        """Sample inputs: each feature active with its probability, magnitude uniform in [0, 1].

        Correlated pairs share one on/off draw; anticorrelated pairs are active with probability 2p and then
        exactly one of the two is on, so every feature keeps its own marginal probability p.
        """
        shape = (batch_size, self.n_inst, self.n_features)
        magnitude = torch.rand(shape, generator=generator)
        coin = torch.rand(shape, generator=generator)
        active = coin < self.feature_probability

        n_corr, n_anti = self.n_correlated_pairs, self.n_anticorrelated_pairs
        if n_corr:
            first = slice(0, 2 * n_corr, 2)
            active[..., 1 : 2 * n_corr : 2] = active[..., first]
        if n_anti:
            start = 2 * n_corr
            first, second = slice(start, start + 2 * n_anti, 2), slice(start + 1, start + 2 * n_anti, 2)
            pair_on = coin[..., first] < 2 * self.feature_probability[:, first]
            pick_first = torch.rand(pair_on.shape, generator=generator) < 0.5
            active[..., first] = pair_on & pick_first
            active[..., second] = pair_on & ~pick_first
        return magnitude * active

    def loss_per_instance(self, x: Float[Tensor, "batch inst feat"]) -> Float[Tensor, "inst"]:
        """Importance-weighted squared error, averaged over batch and features, one value per instance."""
        error = (self(x) - x) ** 2
        return (self.importance * error).mean(dim=(0, 2))


def train_toy_model(
    model: ToyModel,
    steps: int = 5000,
    batch_size: int = 1024,
    lr: float = 1e-3,
    seed: int = 0,
    *,
    schedule: Literal["cosine", "constant"] = "cosine",
    progress: bool = True,
    threads: int | None = 1,
) -> Float[Tensor, "steps inst"]:
    """Train every instance at once with Adam; return the per-instance loss at every step.

    Deterministic on CPU for a given model initialisation and ``seed`` (the data generator's seed).
    ``threads``: torch threads while training (None keeps torch's setting). Toy tensors are so small that a
    second thread only adds synchronisation; with the other core busy, one thread ran 2-7x faster here.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")

    with torch_threads(threads):
        return _train_loop(model, steps, batch_size, lr, seed, schedule, progress)


def _train_loop(model: ToyModel, steps: int, batch_size: int, lr: float, seed: int, schedule: str,
                progress: bool) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = torch.empty(steps, model.n_inst)
    bar = tqdm(range(steps), desc="training toy model", disable=not progress, mininterval=0.5)
    for step in bar:
        if schedule == "cosine":
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss_I = model.loss_per_instance(model.generate_batch(batch_size, generator))
        optimizer.zero_grad(set_to_none=True)
        loss_I.sum().backward()
        optimizer.step()
        history[step] = loss_I.detach()
        if progress and step % 100 == 0:
            bar.set_postfix(loss=f"{loss_I.mean().item():.4g}")
    return history


# ``train`` alone read like ``saelab.train`` (the command) or ``training.train_sae``; the old name warns for a release.
train = renamed("saelab.toy.train", train_toy_model, "saelab.toy.train_toy_model")
