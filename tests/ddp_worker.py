"""One process of the data-parallel tests, started by torchrun from tests/test_distributed.py (not a test itself).

    torchrun --standalone --nproc_per_node=N tests/ddp_worker.py OUT_DIR [STORE_DIR]

Trains the SAE of ``reference_run`` on its data (each rank its share of every batch), a ReLU SAE that
resamples dead latents from each rank's own rows, and, given a store, an SAE streamed from it (each rank its own
shards). Rank 0 writes both SAEs' weights and, for each, the
largest difference between any rank's weights and its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from saelab import distributed
from saelab.files import write_atomic, write_json_atomic
from saelab.harvest import ActivationStore
from saelab.sae import SAE, SAEConfig
from saelab.shards import ShardBatches
from saelab.synthetic import SparseFeatureData
from saelab.training import train_sae

STEPS, BATCH = 25, 256


def reference_data() -> torch.Tensor:
    return SparseFeatureData(64, 16, 0.05, seed=1).sample(4096, seed=2)


def reference_run(activations, **kwargs) -> tuple[SAE, object]:
    """TopK with AuxK on from the start (dead after one batch) and clipping: every cross-rank path is used."""
    sae = SAE(SAEConfig(16, 96, "topk", k=3), seed=0)
    history = train_sae(sae, activations, steps=STEPS, batch_size=BATCH, lr=3e-3, dead_after_rows=BATCH,
                        max_grad_norm=1.0, seed=7, progress=False, **kwargs)
    return sae, history


def _spread(sae: SAE) -> float:
    """Largest absolute difference between this rank's parameters and rank 0's."""
    worst = 0.0
    for p in sae.parameters():
        mine = p.detach().clone()
        dist.broadcast(mine, 0)
        worst = max(worst, float((p.detach() - mine).abs().max()))
    return distributed.total(int(worst * 1e9), "max") / 1e9


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        report = {"world_size": distributed.world_size()}
        sae, history = reference_run(reference_data())
        report["tensor"] = {"spread": _spread(sae), "aux_loss": history.aux_loss, "rows": history.rows,
                            "dead_fraction": history.dead_fraction}
        tensors = {f"tensor.{name}": p.detach().contiguous() for name, p in sae.named_parameters()}
        # A strong L1 at a high learning rate kills latents within a few steps, so the resampling has work.
        relu = SAE(SAEConfig(16, 384, "relu", l1_coefficient=1.0), seed=0)
        history = train_sae(relu, reference_data(), steps=12, batch_size=BATCH, lr=3e-2, dead_after_rows=BATCH,
                            resample_at=[0.5], sparsity_warmup_fraction=0.0, seed=7, progress=False)
        report["relu"] = {"spread": _spread(relu), "resampled": history.resampled}
        if len(sys.argv) > 2:
            store = ActivationStore(sys.argv[2])
            stream = ShardBatches.for_rank(store, 64, seed=3)
            streamed = SAE(SAEConfig(store.metadata["d_model"], 64, "topk", k=4), seed=0)
            history = train_sae(streamed, stream, steps=stream.steps_per_epoch() * 10, lr=3e-3, seed=7,
                                progress=False)
            report["stream"] = {"spread": _spread(streamed), "fvu": history.fvu, "steps": history.steps,
                                "rows": history.rows, "local_rows": stream.rows}
            tensors.update({f"stream.{name}": p.detach().contiguous() for name, p in streamed.named_parameters()})
        if distributed.is_main():
            write_atomic(out / "weights.safetensors", lambda tmp: save_file(tensors, tmp))
            write_json_atomic(out / "report.json", report)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
