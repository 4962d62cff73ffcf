"""Training batches streamed from an on-disk harvest, a few shards at a time, so the data need not fit in RAM.

A harvest of 100M tokens of a 768-wide residual stream is ~300 GB in fp32; training must read it as it goes.
``ShardBatches`` walks an :class:`~saelab.harvest.ActivationStore` shard by shard: it loads a window of
``window`` shards, drops outlier rows, shuffles the rows within the window and yields batches from it, carrying
the rows left over into the next window, then lets the window go. At most ``window`` shards (and one shuffled
copy of them) are held at once, whatever the size of the store. The shard order is reshuffled every pass, and
the stream repeats forever: the trainer's ``steps`` says when to stop, so that every process of a
data-parallel run takes the same number of steps even when their shards hold different numbers of rows.

Under torch.distributed each rank reads only its own shards (every ``world``-th one) and yields its share of
each global batch; ``steps_per_epoch`` is the same number on every rank.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from saelab import distributed
from saelab.harvest import ActivationStore


class ShardBatches:
    """An endless stream of ``(batch_size, d_model)`` batches from some shards of a store (see module doc)."""

    def __init__(self, store: ActivationStore, batch_size: int, *, shards: Sequence[int] | None = None,
                 window: int = 2, max_norm: float | None = None, seed: int = 0):
        if not isinstance(store, ActivationStore):
            raise TypeError(f"store must be a saelab.harvest.ActivationStore, got {type(store).__name__}")
        for name, value in (("batch_size", batch_size), ("window", window)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"max_norm must be > 0 or None, got {max_norm!r}")
        n_shards = len(store.shapes)
        shards = list(range(n_shards)) if shards is None else list(shards)
        if not shards or any(not 0 <= s < n_shards for s in shards):
            raise ValueError(f"shards must be a non-empty list of shard indices in 0..{n_shards - 1}, got {shards}")
        self.store, self.batch_size, self.shards = store, batch_size, shards
        self.window, self.max_norm, self.seed = window, max_norm, seed

    @classmethod
    def for_rank(cls, store: ActivationStore, batch_size: int, **kwargs) -> ShardBatches:
        """This process's stream: every ``world``-th shard, ``batch_size / world`` rows of each global batch."""
        n_shards, world = len(store.shapes), distributed.world_size()
        if n_shards < world:
            raise ValueError(f"the store has {n_shards} shard(s), fewer than the {world} processes; harvest with "
                             "smaller rows_per_shard")
        local = distributed.check_divisible(batch_size)
        return cls(store, local, shards=range(distributed.rank(), n_shards, world), **kwargs)

    @property
    def rows(self) -> int:
        """Rows in this stream's shards (before outliers are dropped)."""
        return sum(self.store.shapes[s] for s in self.shards)

    def steps_per_epoch(self, rows: int | None = None) -> int:
        """Batches in one pass over the fewest rows any rank holds (``rows``: this rank's, e.g. after outliers)."""
        rows = self.rows if rows is None else rows
        return max(distributed.total(rows, "min") // self.batch_size, 1)

    def kept_rows(self, progress: bool = False) -> int:
        """Rows of this stream's shards within ``max_norm`` (one read pass, one shard at a time)."""
        if self.max_norm is None:
            return self.rows
        shards = tqdm(self.shards, desc="counting outliers", unit="shard", disable=not progress)
        return sum(int((self.store.shard(s).float().norm(dim=-1) <= self.max_norm).sum()) for s in shards)

    def __iter__(self) -> Iterator[Float[Tensor, "batch d_model"]]:
        gen = torch.Generator().manual_seed(self.seed + 1009 * distributed.rank())
        leftover = None
        while True:
            order = [self.shards[i] for i in torch.randperm(len(self.shards), generator=gen).tolist()]
            for start in range(0, len(order), self.window):
                parts = [self._rows(s) for s in order[start:start + self.window]]
                if leftover is not None:
                    parts.insert(0, leftover)
                rows_RD = torch.cat(parts)
                del parts  # the shards themselves go now; only their shuffled copy stays
                rows_RD = rows_RD[torch.randperm(rows_RD.shape[0], generator=gen)]
                n_full = rows_RD.shape[0] // self.batch_size
                for i in range(n_full):
                    yield rows_RD[i * self.batch_size:(i + 1) * self.batch_size]
                leftover = rows_RD[n_full * self.batch_size:].clone()
                del rows_RD

    def _rows(self, index: int) -> Float[Tensor, "rows d_model"]:
        rows = self.store.shard(index)
        if self.max_norm is not None:
            rows = rows[rows.float().norm(dim=-1) <= self.max_norm]
        return rows
