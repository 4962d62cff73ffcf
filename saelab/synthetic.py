"""Synthetic activations with known features: n true directions in d dimensions, each rarely active.

The ground truth an SAE should recover when we cannot look inside a real model: every row is a sparse
non-negative combination of ``n_features`` fixed unit directions. Because the directions are known,
``saelab.metrics.match_features`` can score how well an SAE's decoder found them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor


@dataclass
class SparseFeatureData:
    """``n_features`` random unit directions in ``d`` dimensions; each feature fires with ``feature_probability``."""

    n_features: int = 512
    """How many true feature directions there are (more than ``d``: they must share dimensions)."""
    d: int = 64
    """Dimension of the activation space."""
    feature_probability: float = 0.01
    """Chance that a feature is active in a row (independently per feature)."""
    seed: int = 0
    """Seeds the directions (data batches take their own generator)."""

    def __post_init__(self) -> None:
        for name in ("n_features", "d"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < self.feature_probability <= 1:
            raise ValueError(f"feature_probability must be in (0, 1], got {self.feature_probability!r}")
        gen = torch.Generator().manual_seed(self.seed)
        directions = torch.randn(self.n_features, self.d, generator=gen)
        self.directions: Float[Tensor, "feat d"] = directions / directions.norm(dim=1, keepdim=True)

    def sample(self, n_rows: int, *, seed: int = 1) -> Float[Tensor, "batch d"]:
        """``n_rows`` activations: active features get a magnitude uniform in [0, 1)."""
        if not isinstance(n_rows, int) or n_rows < 1:
            raise ValueError(f"n_rows must be a positive integer, got {n_rows!r}")
        gen = torch.Generator().manual_seed(seed)
        out = torch.empty(n_rows, self.d)
        chunk = 16384  # the (rows, n_features) codes are built a chunk at a time to bound memory
        for start in range(0, n_rows, chunk):
            rows = min(chunk, n_rows - start)
            active = torch.rand(rows, self.n_features, generator=gen) < self.feature_probability
            codes = torch.rand(rows, self.n_features, generator=gen) * active
            torch.mm(codes, self.directions, out=out[start:start + rows])
        return out
