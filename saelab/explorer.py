"""Answers for the superposition explorer: the best 2D toy model for a (features, sparsity, importance) setting.

``solve`` trains a few instances of a small ``n_features -> 2`` model and keeps the lowest-loss one. It takes
0.5 s to tens of seconds on 2 busy cores, too slow for a slider, so the package ships the answers for the explorer's whole
grid (``assets/superposition_grid.safetensors``, built by ``python -m saelab.explorer``) and ``SolutionCache``
trains live only for a setting that is off the grid, then remembers it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from saelab.files import write_atomic
from saelab.toy import ToyModel, train_toy_model

GRID_N_FEATURES = (3, 4, 5, 6, 7)
GRID_PROBABILITIES = (1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01)
GRID_DECAYS = (1.0, 0.9, 0.8, 0.6)
# Training recipe for one setting: enough for the dense and the very sparse corners to settle.
N_INST, STEPS, BATCH_SIZE, LR = 4, 1500, 256, 1e-2
GRID_FILE = Path(__file__).parent / "assets" / "superposition_grid.safetensors"


@dataclass(frozen=True)
class Solution:
    """The lowest-loss instance: its weights ``W`` (2, n_features), its loss, and every instance's loss."""

    W: torch.Tensor
    loss: float
    instance_losses: torch.Tensor


def key(n_features: int, feature_probability: float, importance_decay: float) -> str:
    return f"n{n_features}_p{feature_probability:g}_d{importance_decay:g}"


def solve_many(n_features: int, settings: list[tuple[float, float]], seed: int = 0,
               progress: bool = False) -> list[Solution]:
    """Solve several (feature_probability, importance_decay) settings at once, as instances of one model.

    Each setting gets ``N_INST`` seeded instances of an ``n_features -> 2`` ReLU-output model; the lowest-loss
    instance is its answer. Batching the settings costs little more than one: the tensors are tiny, so a
    training step's time is mostly per-step overhead.
    """
    probability = torch.tensor([p for p, _ in settings], dtype=torch.float32).repeat_interleave(N_INST)
    decay = torch.tensor([d for _, d in settings], dtype=torch.float32).repeat_interleave(N_INST)
    importance = decay.unsqueeze(1) ** torch.arange(n_features, dtype=torch.float32)
    model = ToyModel(n_features, 2, len(settings) * N_INST, feature_probability=probability.unsqueeze(1),
                     importance=importance, seed=seed)
    history = train_toy_model(model, steps=STEPS, batch_size=BATCH_SIZE, lr=LR, seed=seed, progress=progress)
    final = history[-STEPS // 10:].mean(0).view(len(settings), N_INST)
    solutions = []
    for k, losses in enumerate(final):
        best = k * N_INST + int(losses.argmin())
        solutions.append(Solution(model.W.detach()[best].clone(), float(losses.min()), losses.clone()))
    return solutions


def solve(n_features: int, feature_probability: float, importance_decay: float, seed: int = 0) -> Solution:
    """The best of ``N_INST`` trained instances for one setting (live training, ~0.5-2 s)."""
    return solve_many(n_features, [(feature_probability, importance_decay)], seed=seed)[0]


class SolutionCache:
    """Solutions by setting: the shipped grid first, live training for anything else (then kept in memory)."""

    def __init__(self, grid_file: Path | None = GRID_FILE):
        self._solutions: dict[str, Solution] = {}
        if grid_file is not None and Path(grid_file).exists():
            tensors = load_file(str(grid_file))
            for name in {k.rsplit("/", 1)[0] for k in tensors}:
                losses = tensors[f"{name}/instance_losses"]
                self._solutions[name] = Solution(tensors[f"{name}/W"], float(losses.min()), losses)

    def __contains__(self, setting: tuple[int, float, float]) -> bool:
        return key(*setting) in self._solutions

    def __len__(self) -> int:
        return len(self._solutions)

    def get(self, n_features: int, feature_probability: float, importance_decay: float) -> Solution:
        name = key(n_features, feature_probability, importance_decay)
        if name not in self._solutions:
            self._solutions[name] = solve(n_features, feature_probability, importance_decay)
        return self._solutions[name]


def build_grid(path: Path = GRID_FILE) -> int:
    """Solve every grid setting and write them to ``path`` atomically; return how many were written."""
    tensors = {}
    for n in tqdm(GRID_N_FEATURES, desc="solving the explorer grid"):
        settings = [(p, d) for p in GRID_PROBABILITIES for d in GRID_DECAYS]
        for (p, d), solution in zip(settings, solve_many(n, settings)):
            tensors[f"{key(n, p, d)}/W"] = solution.W.contiguous()
            tensors[f"{key(n, p, d)}/instance_losses"] = solution.instance_losses.contiguous()
    recipe = dict(n_inst=N_INST, steps=STEPS, batch_size=BATCH_SIZE, lr=LR, seed=0)
    write_atomic(path, lambda temporary: save_file(tensors, temporary, metadata={"recipe": json.dumps(recipe)}))
    return len(tensors) // 2


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Rebuild the superposition explorer's precomputed grid.")
    parser.add_argument("--out", type=Path, default=GRID_FILE)
    print(f"wrote {build_grid(parser.parse_args().out)} settings")
