"""The toy figures draw the numbers they claim to draw."""

import pytest
import torch

from saelab import geometry
from saelab.plots import toy as toy_plots
from saelab.toy import ToyModel


def test_feature_directions_end_each_arrow_at_its_column_of_w():
    model = ToyModel(5, 2, 3, seed=0)
    fig = toy_plots.feature_directions(model, instances=[1, 2], losses=torch.tensor([0.1, 0.2, 0.3]))
    assert len(fig.data) == 10
    W = model.W.detach()
    assert fig.data[5 + 3].x[1] == pytest.approx(W[2, 0, 3].item())  # second panel, feature 3
    assert "loss 3.00e-01" in fig.layout.annotations[1].text
    with pytest.raises(ValueError, match="d_hidden=3"):
        toy_plots.feature_directions(ToyModel(5, 3, seed=0))


def test_superposition_heatmaps_show_w_transpose_w_and_norms_coloured_by_interference():
    model = ToyModel(6, 3, 2, seed=0)
    fig = toy_plots.superposition_heatmaps(model)
    heatmap, bars = fig.data[2], fig.data[3]  # second instance
    assert torch.allclose(torch.tensor(heatmap.z), geometry.overlaps(model)[1].flip(0), atol=1e-6)
    assert list(bars.x) == pytest.approx(geometry.feature_norms(model)[1].tolist())
    assert list(bars.marker.color) == pytest.approx(geometry.interference(model)[1].clamp(0, 1).tolist())


def test_dimensionality_plot_puts_d_star_against_one_over_probability():
    model = ToyModel(6, 2, 2, seed=0)
    fig = toy_plots.dimensionality_plot(model, [1.0, 0.1])
    line = fig.data[-1]
    assert list(line.x) == pytest.approx([1.0, 10.0])
    assert list(line.y) == pytest.approx(geometry.dimensions_per_feature(model).tolist())
    with pytest.raises(ValueError, match="one value per instance"):
        toy_plots.dimensionality_plot(model, [1.0])


def test_phase_diagram_plot_colours_each_cell_by_its_phase():
    diagram = geometry.PhaseDiagram([1.0, 0.1], [0.5, 2.0], [["not represented", "superposed"],
                                                             ["dedicated", "superposed"]],
                                    torch.zeros(2, 2), torch.zeros(2, 2))
    z = toy_plots.phase_diagram_plot(diagram).data[0].z
    assert [list(row) for row in z] == [[0, 2], [1, 2]]


def test_readout_matrix_shows_interference_before_the_relu_and_less_after():
    model = ToyModel(5, 2, 1, seed=0)
    with torch.no_grad():
        model.b_final.fill_(-0.2)
    before = torch.tensor(toy_plots.readout_matrix(model, apply_relu=False).data[0].z)
    after = torch.tensor(toy_plots.readout_matrix(model, apply_relu=True).data[0].z)
    W = model.W.detach()[0]
    assert torch.allclose(before, W.T @ W - 0.2, atol=1e-6)
    assert torch.allclose(after, before.clamp(min=0))
