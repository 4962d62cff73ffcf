"""Lesson 05 checkers: right answers pass, unattempted ones defer, typical mistakes get their named hint."""

import pytest
import torch

from saelab.exercises import ExerciseError, lesson05


def clean_activations(resid, max_norm):
    rows = resid[:, 1:].reshape(-1, resid.shape[-1])
    return rows[rows.norm(dim=-1) <= max_norm]


def normalisation_scale(acts):
    return 1.0 / acts.pow(2).sum(-1).mean().sqrt()


def loss_recovered(clean, spliced, zero_ablated):
    return 1 - (spliced - clean) / (zero_ablated - clean)  # the same quantity, written another way


def not_attempted(*args):
    raise NotImplementedError()


def _keep(rows, max_norm):
    return rows[rows.norm(dim=-1) <= max_norm]


@pytest.mark.parametrize("check, solution", [
    (lesson05.check_clean_activations, clean_activations),
    (lesson05.check_normalisation_scale, normalisation_scale),
    (lesson05.check_normalisation_scale, lambda acts: float(normalisation_scale(acts))),
    (lesson05.check_loss_recovered, loss_recovered)])
def test_right_answers_pass_and_unattempted_defer(check, solution, capsys):
    assert check(solution) is True
    assert "correct" in capsys.readouterr().out
    assert check(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


def test_the_reference_scale_gives_unit_mean_squared_norm():
    acts = torch.randn(1000, 8) * 37 + 5
    scaled = acts * lesson05.reference_normalisation_scale(acts)
    assert scaled.pow(2).sum(-1).mean().item() == pytest.approx(1.0, rel=1e-5)


def test_the_stand_in_harvest_needs_both_rules():
    # The sink at position 0 sits below max_norm, so only dropping the position removes it; outliers exist.
    resid, max_norm = lesson05._harvest_like()
    assert float(resid[:, 0].norm(dim=-1).max()) < max_norm
    assert int((resid[:, 1:].norm(dim=-1) > max_norm).sum()) == 2


@pytest.mark.parametrize("wrong, hint", [
    (lambda r, m: _keep(r.reshape(-1, r.shape[-1]), m), "position 0 is still there"),
    (lambda r, m: r[:, 1:].reshape(-1, r.shape[-1]), "outliers are still there"),
    (lambda r, m: r.reshape(-1, r.shape[-1]), "drop position 0 .* and the rows"),
    (lambda r, m: (lambda x: x[x.pow(2).sum(-1) <= m])(r[:, 1:].reshape(-1, r.shape[-1])), "not the squared norm"),
    (lambda r, m: (lambda x: x[x.norm(dim=-1) > m])(r[:, 1:].reshape(-1, r.shape[-1])), "kept only the outliers"),
    (lambda r, m: _keep(r[:, :-1].reshape(-1, r.shape[-1]), m), "dropped the last position"),
    (lambda r, m: _keep(r[:, 1:].transpose(0, 1).reshape(-1, r.shape[-1]), m), "reading order"),
    (lambda r, m: r[:, 1:], "flatten"),
    (lambda r, m: r.numpy(), "should be a torch.Tensor"),
])
def test_clean_activations_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson05.check_clean_activations(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda a: a.pow(2).sum(-1).mean().sqrt(), "the scale is its inverse"),
    (lambda a: 1 / a.pow(2).sum(-1).mean(), "take the square root"),
    (lambda a: a.pow(2).sum(-1).mean(), "you returned the mean squared norm"),
    (lambda a: a.pow(2).mean().rsqrt(), "summed over d_model"),
    (lambda a: 1 / a.norm(dim=-1).mean(), r"unit mean \*squared\* norm"),
    (lambda a: (a - a.mean(0)).pow(2).sum(-1).mean().rsqrt(), "don't subtract the mean"),
    (lambda a: a.pow(2).sum(-1).rsqrt(), "should return one number"),
])
def test_normalisation_scale_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson05.check_normalisation_scale(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda c, s, z: (s - c) / (z - c), r"\*lost\*"),
    (lambda c, s, z: (z - s) / z, "not by zero_ablated alone"),
    (lambda c, s, z: ((z - s) / (z - c)).clamp(0, 1), "don't clip"),
    (lambda c, s, z: (z - c) / (z - s), "swapped"),
    (lambda c, s, z: c / s, "a ratio of losses"),
    (lambda c, s, z: (s - c) / c, "relative loss increase"),
    (lambda c, s, z: (z - s) / (s - c), "full gap"),
    (lambda c, s, z: float(((z - s) / (z - c)).mean()), "one number for four SAEs"),
    (lambda c, s, z: (z - s) / (z - c) + 0.01, "differs from the reference"),
])
def test_loss_recovered_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson05.check_loss_recovered(wrong)
