"""Can an SAE recover known features? 512 random unit directions in 64 dimensions, each active with p = 0.01
(strength uniform in [0, 1]); ReLU and TopK SAEs trained for a fixed number of steps; MMCS, FVU and L0 on
held-out rows, with the training time.

Also printed: the "oracle read-out" FVU — the true directions used as encoder and decoder, with the true set
of active features. The true code itself reconstructs the data exactly (FVU 0); the oracle read-out's FVU is
what interference costs an encoder that reads each feature along its own direction. An SAE whose encoder
reads that way cannot get far below it; learned encoder directions and thresholds can get under it.

    python benchmarks/sae_toy_recovery.py            # full run (a few minutes)
    python benchmarks/sae_toy_recovery.py --quick    # seconds
"""

from __future__ import annotations

import argparse
import json

import torch

from saelab.metrics import evaluate, match_features
from saelab.sae import SAE, SAEConfig
from saelab.synthetic import SparseFeatureData
from saelab.training import train_sae


def oracle_fvu(data: SparseFeatureData, n_rows: int, seed: int) -> tuple[float, float]:
    """FVU of reading every truly active feature along its own direction (the true code itself has FVU 0)."""
    gen = torch.Generator().manual_seed(seed)
    active = torch.rand(n_rows, data.n_features, generator=gen) < data.feature_probability
    codes = torch.rand(n_rows, data.n_features, generator=gen) * active
    x = codes @ data.directions
    read = (x @ data.directions.t()) * active
    fvu = float((read @ data.directions - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    return fvu, float(active.sum(-1).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = SparseFeatureData(n_features=512, d=64, feature_probability=0.01, seed=0)
    rows, steps = (20_000, 40) if args.quick else (400_000, 1000)
    train, test = data.sample(rows, seed=1), data.sample(10_000 if not args.quick else 2_000, seed=2)
    floor, true_l0 = oracle_fvu(data, 10_000, seed=3)
    settings = [SAEConfig(64, 1024, "topk", k=8), SAEConfig(64, 1024, "topk", k=16),
                SAEConfig(64, 1024, "relu", l1_coefficient=0.2), SAEConfig(64, 1024, "relu", l1_coefficient=0.1),
                SAEConfig(64, 1024, "relu", l1_coefficient=0.05)]
    results = []
    for cfg in settings:
        sae = SAE(cfg, seed=0)
        history = train_sae(sae, train, steps=steps, batch_size=1024, lr=2e-3, progress=False, seed=0)
        ev, match = evaluate(sae, test), match_features(sae, data.directions)
        setting = f"k={cfg.k}" if cfg.architecture == "topk" else f"l1={cfg.l1_coefficient:g}"
        results.append(dict(architecture=cfg.architecture, setting=setting, seconds=history.seconds,
                            steps=history.steps, mmcs=match.mmcs, recovered=match.n_recovered(0.9), fvu=ev.fvu,
                            l0=ev.l0, dead=ev.dead_fraction))
    if args.json:
        print(json.dumps({"oracle_fvu": floor, "true_l0": true_l0, "results": results}))
        return
    print(f"512 features in 64 dims, p=0.01: true L0 {true_l0:.2f}; oracle read-out FVU (true directions, true support) "
          f"{floor:.3f}; {steps} steps of 1024 rows, {torch.get_num_threads()} threads available")
    for r in results:
        print(f"  {r['architecture']:4s} {r['setting']:8s} {r['seconds']:5.1f} s  MMCS {r['mmcs']:.3f} "
              f"({r['recovered']}/512 at cos > 0.9)  FVU {r['fvu']:.3f}  L0 {r['l0']:6.1f}  dead {r['dead']:.1%}")


if __name__ == "__main__":
    main()
