"""Geometry of hand-built weight matrices whose answers are known on paper."""

import math

import pytest
import torch

from saelab import geometry


def polygon(n: int, radius: float = 1.0) -> torch.Tensor:
    angles = torch.arange(n) * 2 * math.pi / n
    return radius * torch.stack([torch.cos(angles), torch.sin(angles)])  # (2, n)


def test_regular_polygons_have_the_papers_sticky_dimensionalities():
    W = torch.stack([polygon(5)])
    assert torch.allclose(geometry.dimensionality(W), torch.full((1, 5), 0.4), atol=1e-5)
    assert torch.allclose(geometry.dimensionality(polygon(3)), torch.full((1, 3), 2 / 3), atol=1e-5)
    antipodal = torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(geometry.dimensionality(antipodal), torch.tensor([[0.5, 0.5, 1.0]]), atol=1e-5)


def test_interference_is_zero_for_orthogonal_features_and_counts_every_other_feature():
    orthogonal = torch.eye(3)[:, :3].unsqueeze(0)
    assert torch.allclose(geometry.interference(orthogonal), torch.zeros(1, 3))
    W = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])  # features 0 and 1 share a direction
    assert torch.allclose(geometry.interference(W), torch.tensor([[4.0, 1.0, 0.0]]), atol=1e-5)


def test_dropped_features_have_zero_norm_and_zero_dimensionality():
    W = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert torch.allclose(geometry.feature_norms(W), torch.tensor([[1.0, 1.0, 0.0]]))
    assert torch.allclose(geometry.dimensionality(W), torch.tensor([[1.0, 1.0, 0.0]]), atol=1e-6)


def test_dimensions_per_feature_is_d_hidden_over_squared_frobenius_norm():
    assert torch.allclose(geometry.dimensions_per_feature(polygon(5)), torch.tensor([0.4]), atol=1e-6)
    assert torch.allclose(geometry.dimensions_per_feature(polygon(4, radius=2.0)), torch.tensor([2 / 16]))


def test_overlaps_are_w_transpose_w_and_classification_follows_the_thresholds():
    W = torch.tensor([[1.0, -1.0, 0.0, 0.05], [0.0, 0.0, 1.0, 0.0]])
    assert torch.allclose(geometry.overlaps(W)[0], W.T @ W)
    assert geometry.classify_feature(W, feature=0) == ["superposed"]
    assert geometry.classify_feature(W, feature=2) == ["dedicated"]
    assert geometry.classify_feature(W, feature=3) == ["not represented"]


def test_weights_of_the_wrong_rank_are_refused():
    with pytest.raises(ValueError, match="W must have shape"):
        geometry.feature_norms(torch.ones(2, 2, 2, 2))


@pytest.mark.slow
def test_phase_diagram_dense_features_are_dropped_or_dedicated_and_sparse_ones_superposed():
    diagram = geometry.phase_diagram([1.0, 0.03], [0.2, 5.0], steps=1500, repeats=2, progress=False)
    low_importance, high_importance = diagram.phase
    assert low_importance[0] == "not represented"  # dense and unimportant: dropped
    assert high_importance[0] == "dedicated"  # dense and important: takes the dimension alone
    assert low_importance[1] == high_importance[1] == "superposed"  # sparse: shares it
    assert diagram.norm.shape == (2, 2)
    with pytest.raises(ValueError, match="feature_density"):
        geometry.phase_diagram([], [1.0])
