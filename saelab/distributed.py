"""Data-parallel SAE training on torch.distributed: who this process is, its share of the data, the reductions.

An SAE is small next to its data, so every process keeps the whole SAE and only the activation rows are split:
each step every rank encodes its share of the global batch, the gradients are averaged with one all-reduce
(the dead-latent bookkeeping rides in the same buffer), and all ranks take the same optimiser step, so their
weights stay identical without ever being sent again. ``torchrun`` sets the environment this reads:

    torchrun --standalone --nproc_per_node=2 -m saelab.train ...

gloo carries the reductions on CPU, nccl on CUDA. Without torchrun (or with one process) every helper here is a
no-op, so the single-process path runs the same code.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from jaxtyping import Bool
from torch import Tensor


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the process that shows progress and writes the results."""
    return rank() == 0


def launched() -> bool:
    """True when torchrun (or an equivalent launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def backend_for(device: torch.device | str) -> str:
    """nccl between GPUs, gloo between CPU processes."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def local_device(device: str) -> torch.device:
    """The device this process trains on: with CUDA under torchrun, the GPU numbered by ``LOCAL_RANK``."""
    resolved = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                            "cpu" if device == "auto" else device)
    if resolved.type == "cuda" and resolved.index is None and launched():
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    return resolved


def setup(device: torch.device | str) -> bool:
    """Join the process group torchrun describes (a no-op for one process); True if this call joined it."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return False
    dist.init_process_group(backend=backend_for(device))
    return True


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def share(n: int) -> slice:
    """This rank's contiguous part of ``n`` items (the first ``n % world`` ranks take one more)."""
    world, me = world_size(), rank()
    base, extra = divmod(n, world)
    start = me * base + min(me, extra)
    return slice(start, start + base + (me < extra))


def check_divisible(batch_size: int) -> int:
    """Rows per rank of a global batch; ranks must hold equal shares for the averaged gradient to be exact."""
    world = world_size()
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} must be divisible by the number of processes ({world})")
    return batch_size // world


def average_gradients_(parameters: Sequence[Tensor], fired_F: Bool[Tensor, " d_sae"]) -> Bool[Tensor, " d_sae"]:
    """Average every gradient over the ranks and OR the ``fired`` masks, in one all-reduce; return the union.

    After it every rank holds the gradient of the loss over the global batch (the loss is a per-row mean and
    the shares are equal) and the same record of which latents fired anywhere in that batch.
    """
    if not active():
        return fired_F
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads] + [fired_F.to(grads[0].dtype)])
    dist.all_reduce(flat)
    flat.div_(world_size())
    offset = 0
    for p, g in zip(parameters, grads):
        p.grad = g
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return flat[offset:] > 0


def mean_over_ranks(value: Tensor) -> Tensor:
    """The mean of ``value`` over ranks (a new tensor; ``value`` itself is left as it was)."""
    if not active():
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world_size()


def broadcast_(tensors: Iterable[Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` on every rank with rank ``src``'s values."""
    if active():
        for tensor in tensors:
            dist.broadcast(tensor.data, src)


def total(value: int, op: str = "sum") -> int:
    """An integer summed (``op="sum"``) or minimised (``op="min"``) over the ranks."""
    ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
    if op not in ops:
        raise ValueError(f"op must be one of {', '.join(ops)}, got {op!r}")
    if not active():
        return value
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t, ops[op])
    return int(t)


def check_same(name: str, value: int) -> None:
    """Raise a one-line ValueError unless every rank passed the same ``value`` (e.g. the step count)."""
    if active() and total(value, "min") != total(value, "max"):
        raise ValueError(f"{name} differs between processes (this rank: {value}); every rank must use the same")


def barrier() -> None:
    if active():
        dist.barrier()
