"""Lesson 01's geometry checkers, and the predict-then-run verdicts that lessons 01-03 share."""

import math

import pytest
import torch

from saelab.exercises import ExerciseError, lesson01


def neighbour_angles(W):
    angles = torch.atan2(W[1], W[0]).sort().values
    return torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi])) * 180 / math.pi


def one_feature_readout(W, b):
    return torch.relu(W.t() @ W + b)


def not_attempted(*args):
    raise NotImplementedError()


@pytest.mark.parametrize("check, solution", [
    (lesson01.check_neighbour_angles, neighbour_angles),
    (lesson01.check_neighbour_angles, lambda W: neighbour_angles(W).flip(0).roll(2)),  # clockwise, elsewhere
    (lesson01.check_one_feature_readout, one_feature_readout)])
def test_right_answers_pass_and_unattempted_defer(check, solution, capsys):
    assert check(solution) is True
    assert "correct" in capsys.readouterr().out
    assert check(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


def test_the_reference_gaps_go_once_round_the_circle():
    angles = torch.tensor([0.3, 1.9, 3.0, 4.4, 5.5])
    gaps = lesson01.reference_neighbour_angles(torch.stack([angles.cos(), angles.sin()]))
    assert float(gaps.sum()) == pytest.approx(360.0, abs=1e-3) and (gaps > 0).all()


def _by_index(W):
    unit = W / W.norm(dim=0)
    return torch.rad2deg(torch.acos((unit * unit.roll(-1, dims=1)).sum(0).clamp(-1, 1)))


def _unsorted(angles):
    return torch.rad2deg(torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi])))


def _atan(W):
    angles = torch.atan(W[1] / W[0]).sort().values
    return torch.rad2deg(torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi])))


@pytest.mark.parametrize("wrong, hint", [
    (lambda W: torch.diff(torch.atan2(W[1], W[0]).sort().values) * 180 / math.pi, "back round to the first"),
    (lambda W: neighbour_angles(W) * math.pi / 180, "radians"),
    (_by_index, "round the circle"),
    (lambda W: _unsorted(torch.atan2(W[1], W[0])), "sort the angles"),
    (_atan, "atan2"),
    (lambda W: neighbour_angles(W)[None], "one gap per direction"),
])
def test_neighbour_angle_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson01.check_neighbour_angles(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda W, b: W.t() @ W + b, "before the ReLU"),
    (lambda W, b: torch.relu(W.t() @ W), "bias b is missing"),
    (lambda W, b: torch.relu(W.t() @ W) + b, "before the ReLU, not after"),
    (lambda W, b: torch.relu(W.t() @ W + b[:, None]), "along the columns"),
    (lambda W, b: W @ W.t(), "W Wᵀ"),
])
def test_readout_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson01.check_one_feature_readout(wrong)


def test_a_prediction_left_empty_explains_without_blocking(capsys):
    assert lesson01.check_dense_prediction(None, kept=2) is None
    out = capsys.readouterr().out
    assert "no prediction written" in out and "gives 2" in out and "two most important" in out


@pytest.mark.parametrize("prediction, verdict, mark", [(2, True, "✔"), ("2", True, "✔"), (3, False, "✘"),
                                                        ("two", False, "write a number")])
def test_a_number_prediction_is_compared_and_explained(prediction, verdict, mark, capsys):
    assert lesson01.check_dense_prediction(prediction, kept=2) is verdict
    out = capsys.readouterr().out
    assert mark in out and "interfere" in out


def test_a_number_prediction_has_a_tolerance(capsys):
    assert lesson01.check_angle_prediction(70, 72.3) is True
    assert lesson01.check_angle_prediction(90, 72.3) is False
    assert "360° / 5" in capsys.readouterr().out


@pytest.mark.parametrize("prediction, verdict", [("b", True), (" B ", True), ("b)", True), ("c", False),
                                                 ("d", False), (2, False)])
def test_a_multiple_choice_prediction_takes_a_letter(prediction, verdict, capsys):
    assert lesson01.check_neighbour_prediction(prediction, neighbour_value=0.31) is verdict
    out = capsys.readouterr().out
    assert "cos 72°" in out and "small positive" in out


def test_the_multiple_choice_answer_comes_from_the_run(capsys):
    assert lesson01.check_neighbour_prediction("c", neighbour_value=-0.2) is True
    assert lesson01.check_neighbour_prediction("a", neighbour_value=0.01) is True
