"""ShardBatches: training streams a store larger than the memory it may use, every row once per pass."""

import weakref

import pytest
import torch

from saelab import distributed
from saelab.harvest import ActivationStore, harvest_to_store
from saelab.sae import SAE, SAEConfig
from saelab.shards import ShardBatches
from saelab.training import train_sae

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def store(tiny_model, tmp_path_factory) -> ActivationStore:
    """16 shards of 4 rows x 31 tokens x d_model 32."""
    tokens = torch.randint(3, 300, (64, 32), generator=torch.Generator().manual_seed(0))
    return harvest_to_store(tiny_model, HOOK, tokens, out_dir=tmp_path_factory.mktemp("store"),
                            rows_per_shard=4, progress=False)


class ResidentShards:
    """Counts the shards read from ``store`` that are still alive (held by anyone), and the most at once."""

    def __init__(self, store: ActivationStore, monkeypatch):
        self.alive = self.peak = self.reads = 0
        read = store.shard

        def counted(index):
            tensor = read(index)
            self.alive += 1
            self.reads += 1
            self.peak = max(self.peak, self.alive)
            weakref.finalize(tensor, self._gone)
            return tensor

        monkeypatch.setattr(store, "shard", counted)

    def _gone(self):
        self.alive -= 1


def test_training_from_a_store_larger_than_the_cap_holds_at_most_a_window_of_shards(store, monkeypatch):
    shard_bytes = max(store.shapes) * store.metadata["d_model"] * 4
    cap = 3 * shard_bytes
    assert len(store) * store.metadata["d_model"] * 4 > 5 * cap  # the store is far beyond what may be held
    resident = ResidentShards(store, monkeypatch)
    stream = ShardBatches(store, 64, window=2, seed=0)
    sae = SAE(SAEConfig(32, 64, "topk", k=4), seed=0)
    history = train_sae(sae, stream, steps=3 * stream.steps_per_epoch(), lr=3e-3, progress=False)
    assert resident.reads >= 3 * len(store.shapes)  # three passes over every shard ...
    assert 1 <= resident.peak <= 2 and resident.peak * shard_bytes <= cap  # ... never more than the window at once
    assert history.rows == 3 * stream.steps_per_epoch() * 64
    assert history.fvu[-1] < history.fvu[0]


def test_one_pass_yields_every_row_once_in_a_shuffled_order(store):
    stream = ShardBatches(store, 50, window=3, seed=1)
    batches = iter(stream)
    first = torch.cat([next(batches) for _ in range(stream.steps_per_epoch())])
    everything = store.load()
    assert len(everything) - 50 < first.shape[0] <= len(everything)
    rows = {tuple(row.tolist()) for row in everything}
    seen = [tuple(row.tolist()) for row in first]
    assert len(set(seen)) == len(seen) and set(seen) <= rows
    assert not torch.equal(first[:50], everything[:50])  # shuffled, not in store order
    again = next(iter(ShardBatches(store, 50, window=3, seed=1)))
    assert torch.equal(again, first[:50])  # and reproducibly so


def test_outliers_above_max_norm_are_dropped_and_counted(store):
    norms = store.load().norm(dim=-1)
    cut = float(norms.median())
    stream = ShardBatches(store, 16, max_norm=cut)
    assert stream.kept_rows() == int((norms <= cut).sum())
    assert all(float(b.norm(dim=-1).max()) <= cut for _, b in zip(range(20), stream))


def test_each_rank_streams_its_own_shards(store, monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    seen = []
    for rank in range(3):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        stream = ShardBatches.for_rank(store, 48)
        assert stream.batch_size == 16
        seen.append(stream.shards)
    assert sorted(s for shards in seen for s in shards) == list(range(len(store.shapes)))
    with pytest.raises(ValueError, match="batch_size=40 must be divisible"):
        ShardBatches.for_rank(store, 40)
    monkeypatch.setattr(distributed, "world_size", lambda: 32)
    with pytest.raises(ValueError, match="fewer than the 32 processes"):
        ShardBatches.for_rank(store, 64)


@pytest.mark.parametrize("kwargs, named", [({"batch_size": 0}, "batch_size"), ({"window": 0}, "window"),
                                           ({"max_norm": 0}, "max_norm"), ({"shards": [99]}, "shards")])
def test_bad_settings_are_refused_naming_them(store, kwargs, named):
    settings = {"batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=named):
        ShardBatches(store, settings.pop("batch_size"), **settings)
