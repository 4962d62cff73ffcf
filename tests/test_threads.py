"""saelab.threads: a thread count set for a while is always put back."""

import pytest
import torch

from saelab import lm, threads, toy


def other_than(count: int) -> int:
    """A thread count different from ``count`` (the tests run with OMP_NUM_THREADS=1)."""
    return 2 if count == 1 else 1


def test_torch_threads_restores_on_exit_and_on_error():
    before = torch.get_num_threads()
    other = other_than(before)
    with threads.torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(KeyError), threads.torch_threads(other):
        assert torch.get_num_threads() == other
        raise KeyError("boom")
    assert torch.get_num_threads() == before
    with threads.torch_threads(None):
        assert torch.get_num_threads() == before


def test_set_torch_threads_returns_what_restores_it():
    before = torch.get_num_threads()
    other = other_than(before)
    restore = threads.set_torch_threads(other)
    assert torch.get_num_threads() == other
    restore()
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 1 or None"):
        threads.set_torch_threads(0)
    assert lm.torch_threads is threads.torch_threads  # the name lm has always offered


def test_toy_training_runs_on_the_threads_asked_for_and_restores_them(monkeypatch):
    before = torch.get_num_threads()
    other = other_than(before)
    seen = []
    real_loop = toy._train_loop

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_loop(*args, **kwargs)

    monkeypatch.setattr(toy, "_train_loop", spy)
    toy.train_toy_model(toy.ToyModel(5, 2, seed=0), steps=3, batch_size=8, progress=False, threads=other)
    assert seen == [other] and torch.get_num_threads() == before
