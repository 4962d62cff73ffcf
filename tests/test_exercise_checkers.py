"""Lesson 01-02 checkers: accept the reference, and name the mistake when a typical wrong answer comes in."""

import pytest
import torch

from saelab import geometry
from saelab.exercises import ExerciseError, lesson01, lesson02


def reference_forward(W, b, x):
    hidden = torch.einsum("ihf,bif->bih", W, x)
    return torch.relu(torch.einsum("ihf,bih->bif", W, hidden) + b)


def test_correct_answers_pass(capsys):
    assert lesson01.check_forward(reference_forward) is True
    assert lesson01.check_loss(lambda x, x_hat, imp: (imp * (x - x_hat) ** 2).mean(dim=(0, 2))) is True
    assert lesson01.check_sparse_batch(lambda b, i, f, p: torch.rand(b, i, f) * (torch.rand(b, i, f) < p)) is True
    assert lesson02.check_interference(geometry.interference) is True
    assert lesson02.check_dimensionality(geometry.dimensionality) is True
    assert lesson02.check_dimensions_per_feature(geometry.dimensions_per_feature) is True
    assert "✔ forward: correct" in capsys.readouterr().out


def test_an_exercise_not_attempted_prints_a_notice_instead_of_failing(capsys):
    def forward(W, b, x):
        raise NotImplementedError()

    assert lesson01.check_forward(forward) is False
    assert "not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda W, b, x: torch.einsum("ihf,bih->bif", W, torch.einsum("ihf,bif->bih", W, x)) + b, "forget the ReLU"),
    (lambda W, b, x: torch.relu(torch.einsum("ihf,bih->bif", W, torch.einsum("ihf,bif->bih", W, x))),
     "bias b is missing"),
    (lambda W, b, x: reference_forward(W, torch.zeros_like(b), x) + b, "before the ReLU, not after"),
    (lambda W, b, x: torch.relu(torch.einsum("ihf,bih->bif", W, torch.relu(torch.einsum("ihf,bif->bih", W, x))) + b),
     "no ReLU in this model"),
    (lambda W, b, x: reference_forward(W, b, x)[0], "has shape"),
    (lambda W, b, x: W @ x, "raised RuntimeError"),
])
def test_forward_mistakes_get_specific_hints(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson01.check_forward(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, x_hat, imp: ((x - x_hat) ** 2).mean(dim=(0, 2)), "importance weights are missing"),
    (lambda x, x_hat, imp: (imp * (x - x_hat) ** 2).sum(dim=(0, 2)), "mean over batch and features"),
    (lambda x, x_hat, imp: (imp * (x - x_hat) ** 2).mean(), "one loss per instance"),
    (lambda x, x_hat, imp: (imp * (x - x_hat).abs()).mean(dim=(0, 2)), "square the error"),
])
def test_loss_mistakes_get_specific_hints(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson01.check_loss(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda b, i, f, p: torch.rand(b, i, f) * (torch.rand(b, i, f) > p), "comparison is flipped"),
    (lambda b, i, f, p: torch.rand(b, i, f) * (torch.rand(b, i, f) < 2 * p), "should be"),
    (lambda b, i, f, p: torch.randn(b, i, f) * (torch.rand(b, i, f) < p), "uniform in \\[0, 1\\]"),
    (lambda b, i, f, p: (torch.rand(b, 1, f) * (torch.rand(b, 1, f) < p)).expand(b, i, f), "identical data"),
    (lambda b, i, f, p: torch.rand(b, f) * (torch.rand(b, f) < p), "shape"),
])
def test_sparse_batch_mistakes_get_specific_hints(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson01.check_sparse_batch(wrong)


def _unit(W):
    return W / W.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("wrong, hint", [
    (lambda W: (_unit(W).transpose(1, 2) @ W).pow(2).sum(-1), "skip j = f"),
    (lambda W: (W.transpose(1, 2) @ W).pow(2).sum(-1) - W.norm(dim=1).pow(4), "normalise W_f"),
])
def test_interference_mistakes_get_specific_hints(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson02.check_interference(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda W: 1 / geometry.dimensionality(W), "upside down"),
    (lambda W: W.norm(dim=1).pow(2) / (W.transpose(1, 2) @ W).pow(2).sum(-1), "normalise W_f"),
    (lambda W: W.norm(dim=1).pow(2) / ((_unit(W).transpose(1, 2) @ W).pow(2).sum(-1) - W.norm(dim=1).pow(2)),
     "includes j = f"),
])
def test_dimensionality_mistakes_get_specific_hints(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson02.check_dimensionality(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda W: W.pow(2).sum(dim=(1, 2)) / W.shape[1], "upside down"),
    (lambda W: W.shape[1] / W.pow(2).sum(dim=(1, 2)).sqrt(), "squared Frobenius"),
    (lambda W: W.shape[2] / W.pow(2).sum(dim=(1, 2)), "d_hidden"),
])
def test_dimensions_per_feature_mistakes_get_specific_hints(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson02.check_dimensions_per_feature(wrong)


def _no_eps_dimensionality(W):
    norms = W.norm(dim=1)
    return norms.pow(2) / ((W / norms.unsqueeze(1)).transpose(1, 2) @ W).pow(2).sum(-1)


def _no_eps_interference(W):
    dots = _unit(W).transpose(1, 2) @ W
    return dots.pow(2).sum(-1) - torch.diagonal(dots, dim1=1, dim2=2).pow(2)


@pytest.mark.parametrize("check, wrong", [(lesson02.check_dimensionality, _no_eps_dimensionality),
                                          (lesson02.check_interference, _no_eps_interference)])
def test_a_dropped_feature_must_come_out_zero_not_nan(check, wrong):
    with pytest.raises(ExerciseError, match="NaN for a dropped feature .* add a small eps"):
        check(wrong)
