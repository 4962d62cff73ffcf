"""Data-parallel training: two gloo processes train what one process trains, and the end-to-end command runs
under torchrun. The processes are real (torchrun as a subprocess); the helpers are also checked alone."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from saelab import distributed
from saelab.feature_store import FeatureStore
from saelab.harvest import ActivationStore, harvest_to_store
from saelab.sae import SAE

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ddp_worker", ROOT / "tests" / "ddp_worker.py")
ddp_worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ddp_worker)


def torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture
def small_store(tiny_model, tmp_path) -> ActivationStore:
    tokens = torch.randint(3, 300, (40, 32), generator=torch.Generator().manual_seed(0))
    return harvest_to_store(tiny_model, "blocks.1.hook_resid_post", tokens, out_dir=tmp_path / "store",
                            rows_per_shard=5, progress=False)


@pytest.mark.slow
def test_two_gloo_processes_end_with_the_weights_of_one_process_on_the_same_global_batches(tmp_path, small_store):
    torchrun("tests/ddp_worker.py", str(tmp_path), str(small_store.path))
    report = json.loads((tmp_path / "report.json").read_text())
    weights = load_file(tmp_path / "weights.safetensors")
    assert report["world_size"] == 2
    torch.set_num_threads(1)
    reference, history = ddp_worker.reference_run(ddp_worker.reference_data())
    untrained = ddp_worker.SAE(ddp_worker.SAEConfig(16, 96, "topk", k=3), seed=0)
    for name, p in reference.named_parameters():
        assert torch.allclose(weights[f"tensor.{name}"], p.detach(), atol=1e-4, rtol=0), name
    assert not torch.allclose(reference.W_enc, untrained.W_enc, atol=1e-2)  # training moved the weights
    # AuxK was on, and the dead-latent record was the global batch's, as in one process (the logged losses
    # are rank 0's own rows, so they are not compared).
    assert max(report["tensor"]["aux_loss"]) > 0 and max(history.aux_loss) > 0
    assert report["tensor"]["dead_fraction"] == pytest.approx(history.dead_fraction, abs=1e-6)
    assert report["tensor"]["rows"] == history.rows
    # Every rank ends with exactly rank 0's weights, for tensor input and each rank streaming its own shards.
    assert report["tensor"]["spread"] == 0 and report["stream"]["spread"] == 0
    # Resampling picks from each rank's own rows; rank 0's picks (and Adam moments) are sent to all.
    assert report["relu"]["resampled"] and report["relu"]["spread"] == 0
    stream = report["stream"]
    assert 0 < stream["local_rows"] < len(small_store)  # a rank reads only its own shards
    assert stream["fvu"][-1] < 0.7 * stream["fvu"][0], stream["fvu"]


@pytest.mark.slow
def test_torchrun_with_two_processes_writes_the_sae_its_metrics_and_feature_store_once(tmp_path,
                                                                                      tiny_model_folders):
    out, work = tmp_path / "sae", tmp_path / "work"
    done = torchrun("-m", "saelab.train", "--model", str(tiny_model_folders["gpt2"]), "--layer", "1",
                    "--sources", "python_topics", "--max-tokens", "4000", "--seq-len", "32", "--d-sae", "128",
                    "--k", "4", "--epochs", "2", "--batch-size", "256", "--feature-store-rows", "8",
                    "--rows-per-shard", "16", "--out", str(out), "--work-dir", str(work))
    sae = SAE.load(out)
    assert sae.cfg.d_in == 32 and sae.cfg.d_sae == 128 and sae.cfg.k == 4
    assert sae.cfg.model_name == str(tiny_model_folders["gpt2"])
    assert sae.cfg.hook_name == "blocks.1.hook_resid_post"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["l0"] == pytest.approx(4.0)
    assert 0 < metrics["fvu"] < 1
    assert done.stdout.count('"processes": 2') == 1  # rank 0 alone reports
    store = FeatureStore.load(out / "feature_store.safetensors")
    assert store.d_sae == 128 and (store.max_activation > 0).sum() > 0
    # Each process harvested its own half of the training rows into its own store.
    stores = [ActivationStore(p) for p in sorted(work.glob("*/rank*of2"))]
    assert len(stores) == 2
    rows = [s.metadata["n_rows"] for s in stores]
    assert abs(rows[0] - rows[1]) <= 1
    assert sum(len(s) for s in stores) == metrics["train_tokens"]
    assert sorted(p.name for p in out.iterdir()) == ["cfg.json", "feature_store.safetensors", "metrics.json",
                                                     "sae_weights.safetensors"]


@pytest.mark.parametrize("n, world", [(10, 3), (7, 2), (2, 4), (8, 1)])
def test_the_ranks_shares_cover_every_item_once_and_differ_by_at_most_one(monkeypatch, n, world):
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    shares = []
    for rank in range(world):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        shares.append(list(range(n))[distributed.share(n)])
    assert [i for share in shares for i in share] == list(range(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_a_batch_that_does_not_split_evenly_is_refused_naming_it(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    assert distributed.check_divisible(12) == 4
    with pytest.raises(ValueError, match="batch_size=10 must be divisible by the number of processes"):
        distributed.check_divisible(10)


def test_one_process_needs_no_process_group():
    assert not distributed.active() and distributed.world_size() == 1 and distributed.is_main()
    fired = torch.tensor([True, False])
    assert distributed.average_gradients_([], fired) is fired
    assert distributed.total(5) == 5 and distributed.backend_for("cpu") == "gloo"
    assert distributed.backend_for("cuda:1") == "nccl"
    with pytest.raises(ValueError, match="op must be one of sum, min, max"):
        distributed.total(1, "mean")
