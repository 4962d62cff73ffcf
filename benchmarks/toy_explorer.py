"""Superposition explorer and toy training speed.

Figures (medians over repeats, measured in one run):
- redraw: seconds from a slider move to the updated figure, settings from the shipped grid (budget 0.5 s);
- live solve: seconds to train an off-grid setting (what a cache miss costs);
- toy training: ms per step of ``saelab.toy.train_toy_model`` against a minimal plain-PyTorch loop of the same
  model, as a ratio (ours / plain time; <= 1.0 means no overhead).

    python benchmarks/toy_explorer.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch

from saelab import explorer, toy
from saelab.widgets import superposition_explorer


def redraw_seconds(moves: int) -> list[float]:
    widget = superposition_explorer()
    sliders = [(widget.n_features, explorer.GRID_N_FEATURES), (widget.feature_probability, explorer.GRID_PROBABILITIES),
               (widget.importance_decay, explorer.GRID_DECAYS)]
    timings = []
    for k in range(moves):  # one slider at a time, each move to a different value, as a learner would
        slider, values = sliders[k % len(sliders)]
        start = time.perf_counter()
        slider.value = values[(values.index(slider.value) + 1) % len(values)]
        timings.append(time.perf_counter() - start)
    return timings


def plain_loop_ms_per_step(steps: int, n_inst: int, n_features: int, batch_size: int) -> float:
    """The same model and loss, written as plainly as possible: the reference for our trainer's overhead."""
    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.randn(n_inst, 2, n_features) * 0.5)
    b = torch.nn.Parameter(torch.zeros(n_inst, n_features))
    importance = 0.9 ** torch.arange(n_features, dtype=torch.float32)
    optimizer = torch.optim.Adam([W, b], lr=1e-3)
    start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        x = torch.rand(batch_size, n_inst, n_features) * (torch.rand(batch_size, n_inst, n_features) < 0.05)
        h = torch.einsum("ihf,bif->bih", W, x)
        out = torch.relu(torch.einsum("ihf,bih->bif", W, h) + b)
        loss = (importance * (out - x) ** 2).mean(dim=(0, 2)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps * 1000


def ours_ms_per_step(steps: int, n_inst: int, n_features: int, batch_size: int) -> float:
    model = toy.ToyModel(n_features, 2, n_inst, feature_probability=0.05,
                         importance=0.9 ** torch.arange(n_features, dtype=torch.float32), seed=0)
    start = time.perf_counter()
    toy.train_toy_model(model, steps=steps, batch_size=batch_size, lr=1e-3, progress=False, threads=None)
    return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds, not minutes: fewer repeats and steps")
    args = parser.parse_args()
    repeats, steps = (3, 100) if args.quick else (7, 500)
    torch.set_num_threads(2)

    redraws = redraw_seconds(20 if args.quick else 100)
    start = time.perf_counter()
    explorer.solve(5, 0.15, 0.9)
    live = time.perf_counter() - start

    ratios, ours_ms, plain_ms = [], [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
        plain_ms.append(plain_loop_ms_per_step(steps, 8, 5, 1024))
        ours_ms.append(ours_ms_per_step(steps, 8, 5, 1024))
        ratios.append(ours_ms[-1] / plain_ms[-1])

    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"explorer redraw, median of {len(redraws)} slider moves: {statistics.median(redraws) * 1000:.1f} ms "
          f"(max {max(redraws) * 1000:.1f} ms; budget 500 ms)")
    print(f"explorer live solve of an off-grid setting: {live:.2f} s")
    print(f"toy training 5->2, 8 instances, batch 1024: ours {statistics.median(ours_ms):.2f} ms/step, "
          f"plain loop {statistics.median(plain_ms):.2f} ms/step, time ratio ours/plain "
          f"{statistics.median(ratios):.2f} (both on 2 threads)")


if __name__ == "__main__":
    main()
