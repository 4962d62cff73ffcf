"""train_sae keeps every tensor it makes on the training device, and its optional bf16 autocast.

CPU-only machines cannot put a tensor on a second device, so the check turns torch's device-mismatch errors
on another way: inside ``with torch.device("meta")`` every tensor made without naming a device lands on the
meta device, and the first time one meets the SAE's CPU tensors torch raises. A trainer that makes each of
its tensors on the device of the data it works with runs through.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from saelab.metrics import evaluate
from saelab.sae import SAE, SAEConfig
from saelab.synthetic import SparseFeatureData
from saelab.training import train_sae

CASES = [("topk", {"k": 2}), ("topk", {"k": 2, "matryoshka_groups": 2}), ("relu", {}), ("jumprelu", {})]


@pytest.fixture(scope="module")
def data():
    return SparseFeatureData(48, 8, 0.05, seed=1).sample(3000, seed=2)


def test_the_meta_device_check_catches_a_tensor_made_without_a_device():
    on_cpu = torch.ones(3)
    with torch.device("meta"), pytest.raises(RuntimeError):
        float((torch.zeros(3) + on_cpu).sum())


@pytest.mark.parametrize("architecture, kwargs", CASES)
def test_training_makes_no_tensor_off_the_device_of_its_data(data, architecture, kwargs):
    # Dead after one batch and resampling halfway: AuxK and resampling (the paths that make new tensors) run.
    common = {"steps": 24, "batch_size": 128, "dead_after_rows": 128, "max_grad_norm": 1.0, "progress": False,
                  "resample_at": [0.5] if architecture == "relu" else None}
    reference = SAE(SAEConfig(8, 192, architecture, **kwargs), seed=0)
    expected = train_sae(reference, data, **common)
    sae, other = (SAE(SAEConfig(8, 192, architecture, **kwargs), seed=0) for _ in range(2))
    with torch.device("meta"):
        history = train_sae(sae, data, **common)
        streamed = train_sae(other, (data[i * 128:(i + 1) * 128] for i in range(20)), steps=20, progress=False)
    assert all(p.device.type == "cpu" for p in sae.parameters())
    assert history.fvu == expected.fvu  # and it trained exactly as outside the check
    assert all(torch.equal(a, b) for a, b in zip(sae.parameters(), reference.parameters()))
    assert streamed.steps == 20
    if architecture == "topk":
        assert max(history.aux_loss) > 0
    with torch.device("meta"):
        checked = evaluate(sae, data, batch_size=1000)
    assert checked.fvu == pytest.approx(evaluate(reference, data).fvu, rel=1e-6)


class MatmulDtypes(TorchDispatchMode):
    """Records the dtype of every matrix product run while active."""

    def __init__(self):
        super().__init__()
        self.dtypes = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.addmm, torch.ops.aten.mm):
            self.dtypes.add(args[1].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("architecture, kwargs", [("topk", {"k": 2}), ("relu", {})])
def test_bf16_autocast_runs_the_matmuls_in_bf16_and_keeps_fp32_weights(data, architecture, kwargs):
    fvu = {}
    for dtype in (None, torch.bfloat16):
        sae = SAE(SAEConfig(8, 64, architecture, **kwargs), seed=0)
        with MatmulDtypes() as seen:
            history = train_sae(sae, data, epochs=4, batch_size=128, lr=1e-2, progress=False, autocast_dtype=dtype)
        assert seen.dtypes == {dtype or torch.float32}  # forward and backward products alike
        assert all(p.dtype == torch.float32 for p in sae.parameters())
        fvu[dtype] = history.fvu[-1]
    assert fvu[torch.bfloat16] == pytest.approx(fvu[None], abs=0.05)


def test_an_autocast_dtype_that_needs_loss_scaling_is_refused_naming_it(data):
    with pytest.raises(ValueError, match="autocast_dtype must be None or torch.bfloat16"):
        train_sae(SAE(SAEConfig(8, 32, "topk", k=2)), data, steps=2, progress=False, autocast_dtype=torch.float16)
