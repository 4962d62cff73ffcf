"""The toy model of superposition: forward pass, data, training, and the paper's two headline shapes."""

import math

import pytest
import torch

from saelab import geometry, toy


def best_instance(history: torch.Tensor) -> int:
    return int(history[-200:].mean(0).argmin())


def neighbour_angles_degrees(W_2F: torch.Tensor) -> torch.Tensor:
    angles = torch.atan2(W_2F[1], W_2F[0]).sort().values
    return torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi])) * 180 / math.pi


@pytest.mark.slow
def test_sparse_five_features_in_two_dimensions_form_a_pentagon():
    importance = 0.9 ** torch.arange(5.0)
    model = toy.ToyModel(5, 2, 8, feature_probability=0.05, importance=importance, seed=0)
    history = toy.train_toy_model(model, steps=5000, batch_size=1024, lr=1e-3, seed=0, progress=False)
    W = model.W.detach()[best_instance(history)]
    assert (geometry.feature_norms(W) > 0.7).all()
    assert ((neighbour_angles_degrees(W) - 72).abs() < 10).all()
    assert geometry.dimensionality(W).sub(0.4).abs().max() < 0.05  # a pentagon gives each feature 2/5


@pytest.mark.slow
def test_dense_features_keep_exactly_the_two_most_important():
    model = toy.ToyModel(4, 2, 4, feature_probability=1.0, importance=0.8 ** torch.arange(4.0), seed=0)
    history = toy.train_toy_model(model, steps=3000, batch_size=1024, lr=1e-2, seed=0, progress=False)
    norms = geometry.feature_norms(model)[best_instance(history)]
    assert (norms[:2] > 0.9).all(), norms
    assert (norms[2:] < 0.1).all(), norms


def test_training_is_deterministic_for_a_seed():
    runs = []
    for _ in range(2):
        model = toy.ToyModel(5, 2, 3, feature_probability=0.1, seed=3)
        runs.append((toy.train_toy_model(model, steps=50, batch_size=64, seed=7, progress=False), model.W.detach()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    other = toy.ToyModel(5, 2, 3, feature_probability=0.1, seed=3)
    assert not torch.equal(toy.train_toy_model(other, steps=50, batch_size=64, seed=8, progress=False), runs[0][0])


def test_training_lowers_the_loss_of_every_instance():
    model = toy.ToyModel(6, 3, 4, feature_probability=0.1, seed=0)
    history = toy.train_toy_model(model, steps=300, batch_size=256, lr=1e-2, seed=0, progress=False)
    assert history.shape == (300, 4)
    assert (history[-20:].mean(0) < 0.7 * history[:20].mean(0)).all()


def test_forward_pass_of_each_variant_matches_its_formula():
    x = torch.rand(7, 2, 5)
    for variant in toy.VARIANTS:
        model = toy.ToyModel(5, 3, 2, variant=variant, seed=0)
        with torch.no_grad():
            model.b_final.normal_()
            hidden = torch.einsum("ihf,bif->bih", model.W, x)
            if variant == "relu_hidden":
                hidden = hidden.relu()
            out = torch.einsum("ihf,bih->bif", model.W, hidden) + model.b_final
            if variant != "linear":
                out = out.relu()
            assert torch.allclose(model(x), out, atol=1e-6), variant
            assert torch.allclose(model.hidden(x), hidden, atol=1e-6), variant
    assert (toy.ToyModel(5, 3, 2, variant="linear", seed=0)(-x) < 0).any()  # no ReLU on the linear model


def test_independent_features_are_on_with_their_probability_and_uniform_magnitudes():
    probability = torch.tensor([[0.5, 0.2, 0.05, 0.05], [0.1, 0.1, 0.1, 1.0]])
    model = toy.ToyModel(4, 2, 2, feature_probability=probability)
    x = model.generate_batch(40000, torch.Generator().manual_seed(0))
    assert torch.allclose((x > 0).float().mean(0), probability, atol=0.01)
    active = x[x > 0]
    assert active.max() <= 1 and abs(active.mean().item() - 0.5) < 0.01


def test_correlated_pairs_switch_on_together_and_anticorrelated_pairs_never_do():
    model = toy.ToyModel(6, 2, 1, feature_probability=0.2, n_correlated_pairs=1, n_anticorrelated_pairs=1)
    on = model.generate_batch(40000, torch.Generator().manual_seed(0))[:, 0] > 0
    assert torch.equal(on[:, 0], on[:, 1])
    assert not (on[:, 2] & on[:, 3]).any()
    assert torch.allclose(on.float().mean(0), torch.full((6,), 0.2), atol=0.01)  # marginals stay p
    assert (on[:, 4] & on[:, 5]).any()  # the uncorrelated rest are independent


def test_importance_and_probability_broadcast_over_instances_and_features():
    model = toy.ToyModel(4, 2, 3, feature_probability=torch.tensor([[0.1], [0.2], [0.3]]),
                         importance=torch.tensor([1.0, 0.5, 0.25, 0.125]))
    assert model.feature_probability.shape == model.importance.shape == (3, 4)
    assert torch.equal(model.feature_probability[:, 0], torch.tensor([0.1, 0.2, 0.3]))
    assert model.W.shape == (3, 2, 4)


@pytest.mark.parametrize("kwargs, named", [
    (dict(n_features=5, d_hidden=5), "d_hidden"),
    (dict(n_features=5, d_hidden=2, feature_probability=0.0), "feature_probability"),
    (dict(n_features=5, d_hidden=2, feature_probability=1.5), "feature_probability"),
    (dict(n_features=5, d_hidden=2, importance=-1.0), "importance"),
    (dict(n_features=5, d_hidden=2, importance=torch.ones(3)), "importance"),
    (dict(n_features=5, d_hidden=2, n_inst=2, feature_probability=torch.full((3, 5), 0.1)), "feature_probability"),
    (dict(n_features=5, d_hidden=2, variant="gelu"), "variant"),
    (dict(n_features=5, d_hidden=0), "d_hidden"),
    (dict(n_features=4, d_hidden=2, n_correlated_pairs=3), "n_correlated_pairs"),
    (dict(n_features=4, d_hidden=2, n_anticorrelated_pairs=1, feature_probability=0.7), "feature_probability"),
])
def test_bad_settings_give_one_line_errors_naming_the_argument(kwargs, named):
    with pytest.raises(ValueError) as error:
        toy.ToyModel(**kwargs)
    message = str(error.value)
    assert named in message and "\n" not in message


def test_inputs_of_the_wrong_shape_and_bad_training_settings_are_refused():
    model = toy.ToyModel(5, 2, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, n_inst=3, n_features=5\)"):
        model(torch.rand(4, 5))
    for kwargs, named in [(dict(steps=0), "steps"), (dict(lr=-1.0), "lr"), (dict(batch_size=0), "batch_size"),
                          (dict(schedule="linear"), "schedule")]:
        with pytest.raises(ValueError, match=named):
            toy.train_toy_model(model, progress=False, **kwargs)
