"""The SAE trade-off explorer, driven without a browser: moving a slider retrains and changes the figure."""

import pytest
import torch

from saelab.synthetic import SparseFeatureData
from saelab.training import train_tradeoff_point
from saelab.widgets import sae_tradeoff_explorer


@pytest.fixture(scope="module")
def toy_activations():
    data = SparseFeatureData(n_features=24, d=8, feature_probability=0.03, seed=0)
    return data.sample(12_000, seed=1), data.directions


def test_train_tradeoff_point_scores_against_true_features(toy_activations):
    acts, true = toy_activations
    point = train_tradeoff_point(acts, true, "topk", 1, 48, steps=150)
    assert point.mmcs > 0.8 and point.l0 <= 1.0 and 0 < point.fvu < 1
    assert point.best_cosine.shape == (24,) and point.feature_density.shape == (48,)
    looser = train_tradeoff_point(acts, true, "topk", 4, 48, steps=150)
    assert looser.l0 > point.l0 and looser.fvu < point.fvu  # the trade-off, measured
    with pytest.raises(ValueError, match="architecture must be 'topk' or 'relu'"):
        train_tradeoff_point(acts, true, "gated", 1, 48)


def test_train_point_from_the_widget_module_still_works_but_warns(toy_activations):
    acts, true = toy_activations
    with pytest.warns(DeprecationWarning, match="saelab.training.train_tradeoff_point"):
        from saelab.widgets.sae_tradeoff import train_point
    old = train_point(acts, true, "topk", 2, 24, steps=20)
    new = train_tradeoff_point(acts, true, "topk", 2, 24, steps=20)
    assert (old.l0, old.fvu, old.mmcs) == (new.l0, new.fvu, new.mmcs)  # same seed, same numbers


def test_moving_the_first_slider_changes_the_figure(toy_activations):
    acts, true = toy_activations
    explorer = sae_tradeoff_explorer(acts, true, steps=100)
    first_slider = explorer.children[0].children[0]
    assert first_slider is explorer.sparsity
    before_star = (explorer.figure.data[3].x, explorer.figure.data[3].y)
    before_bars = explorer.figure.data[0].y
    status_before = explorer.status.value
    first_slider.value = 1
    assert (explorer.figure.data[3].x, explorer.figure.data[3].y) != before_star
    assert explorer.figure.data[0].y != before_bars
    assert explorer.status.value != status_before and "k = 1" in explorer.status.value
    assert len(explorer.figure.data[1].x) == 2  # both settings tried are on the L0-FVU plane


def test_size_and_architecture_controls(toy_activations):
    acts, true = toy_activations
    explorer = sae_tradeoff_explorer(acts, true, steps=60)
    explorer.size.value = 0.5
    assert explorer.last_point.d_sae == 12
    assert len(explorer.figure.data[4].y) == 24
    explorer.architecture.value = "relu"
    assert explorer.sparsity.description == "L1 coef" and explorer.last_point.architecture == "relu"
    assert len(explorer.figure.data[2].x) == 1  # the relu point appears in its own trace
    cached = len(explorer.cache)
    explorer.architecture.value = "topk"  # back to a setting already trained: served from the cache
    assert len(explorer.cache) == cached  # (topk, k=3, 12 latents) was trained already: served from the cache
    assert explorer.last_point.architecture == "topk" and explorer.last_point.d_sae == 12


def test_bad_arguments_are_one_line_errors(toy_activations):
    acts, true = toy_activations
    with pytest.raises(ValueError, match="size_multiple must be one of"):
        sae_tradeoff_explorer(acts, true, size_multiple=3)
    with pytest.raises(ValueError, match=r"true_features must be \(n_features, d_in=8\)"):
        sae_tradeoff_explorer(acts, true[:, :4])
    with pytest.raises(ValueError, match="sparsity must be one of"):
        sae_tradeoff_explorer(acts, true, sparsity=5)
