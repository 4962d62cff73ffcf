"""The superposition explorer: shipped grid, live training off the grid, widget wiring and redraw budget."""

import statistics

import pytest
import torch
from safetensors.torch import load_file

from saelab import explorer, geometry
from saelab.widgets import sparsity_sweep_viewer, superposition_explorer
from saelab.toy import ToyModel


@pytest.fixture(scope="module")
def cache():
    return explorer.SolutionCache()


def test_the_shipped_grid_covers_every_slider_setting(cache):
    assert len(cache) == len(explorer.GRID_N_FEATURES) * len(explorer.GRID_PROBABILITIES) * len(explorer.GRID_DECAYS)
    for n in explorer.GRID_N_FEATURES:
        for p in explorer.GRID_PROBABILITIES:
            for d in explorer.GRID_DECAYS:
                assert (n, p, d) in cache
                assert cache.get(n, p, d).W.shape == (2, n)


def test_shipped_answers_show_the_lessons_shapes(cache):
    sparse = cache.get(5, 0.02, 0.9).W
    assert (geometry.feature_norms(sparse) > 0.7).all()  # all five kept: the pentagon
    dense = geometry.feature_norms(cache.get(5, 1.0, 0.6).W)[0]
    assert (dense[:2] > 0.9).all() and (dense[2:] < 0.2).all()  # dense: only the two most important


def test_off_grid_settings_are_trained_live_then_remembered(monkeypatch):
    monkeypatch.setattr(explorer, "STEPS", 40)
    cache = explorer.SolutionCache(grid_file=None)
    assert (4, 0.15, 0.9) not in cache
    solution = cache.get(4, 0.15, 0.9)
    assert solution.W.shape == (2, 4) and solution.instance_losses.shape == (explorer.N_INST,)
    assert solution.loss == pytest.approx(solution.instance_losses.min().item())
    assert cache.get(4, 0.15, 0.9) is solution


def test_building_the_grid_writes_a_readable_file_and_never_leaves_a_partial_one(tmp_path, monkeypatch):
    monkeypatch.setattr(explorer, "STEPS", 20)
    monkeypatch.setattr(explorer, "GRID_N_FEATURES", (3,))
    monkeypatch.setattr(explorer, "GRID_PROBABILITIES", (1.0, 0.1))
    monkeypatch.setattr(explorer, "GRID_DECAYS", (1.0,))
    target = tmp_path / "grid.safetensors"
    assert explorer.build_grid(target) == 2
    assert set(load_file(str(target))) == {"n3_p1_d1/W", "n3_p1_d1/instance_losses", "n3_p0.1_d1/W",
                                            "n3_p0.1_d1/instance_losses"}
    before = target.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(explorer, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        explorer.build_grid(target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.safetensors"]


def test_moving_a_slider_redraws_the_directions_of_the_new_setting(cache):
    widget = superposition_explorer(n_features=5, feature_probability=0.05, importance_decay=0.9)
    widget.feature_probability.value = 1.0
    W = cache.get(5, 1.0, 0.9).W
    arrows = widget.figure.data[:-1]
    for f in range(5):
        assert arrows[f].x[1] == pytest.approx(W[0, f].item()) and arrows[f].y[1] == pytest.approx(W[1, f].item())
    assert torch.allclose(torch.tensor(widget.figure.data[-1].z), W.T @ W, atol=1e-6)
    assert "2 of 5 features represented" in widget.status.value

    widget.n_features.value = 3
    assert [bool(t.visible) for t in arrows] == [True] * 3 + [False] * 4
    assert torch.tensor(widget.figure.data[-1].z).shape == (3, 3)


def test_redraw_after_a_slider_move_stays_under_half_a_second():
    widget = superposition_explorer()
    timings = []
    for p in explorer.GRID_PROBABILITIES:
        for n in (3, 7):
            widget.n_features.value = n
            widget.feature_probability.value = p
            timings.append(widget.last_redraw_seconds)
    assert statistics.median(timings) < 0.5 and max(timings) < 1.0


def test_explorer_settings_off_the_sliders_are_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="feature_probability must be one of 1, 0.5"):
        superposition_explorer(feature_probability=0.4)
    with pytest.raises(ValueError, match="n_features must be one of 3, 4"):
        superposition_explorer(n_features=12)


def test_sweep_viewer_slider_shows_each_instance():
    model = ToyModel(6, 2, 3, seed=0)
    viewer = sparsity_sweep_viewer(model, [1.0, 0.1, 0.01])
    viewer.slider.value = 2
    heatmap, bars = viewer.figure.data
    assert torch.allclose(torch.tensor(heatmap.z), geometry.overlaps(model)[2].flip(0), atol=1e-6)
    assert list(bars.x) == pytest.approx(geometry.feature_norms(model)[2].tolist())
    assert "0.01" in viewer.figure.layout.annotations[0].text
    with pytest.raises(ValueError, match="feature_probabilities has 2 values"):
        sparsity_sweep_viewer(model, [1.0, 0.1])
