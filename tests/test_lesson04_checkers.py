"""Lesson 04 checkers: right answers pass, unattempted ones defer, typical mistakes get their named hint."""

import pytest
import torch

from saelab.exercises import ExerciseError, lesson04


def not_attempted(*args):
    raise NotImplementedError()


def store_last_position(activation, hook, store):
    store[hook.name] = activation[:, -1].clone()
    return activation


def logit_lens(resid, ln_scale, W_U, eps):
    return (resid * torch.rsqrt(resid.pow(2).mean(-1, keepdim=True) + eps) * ln_scale) @ W_U


def direct_logit_attribution(outputs, final_resid, ln_scale, unembed_column, eps):
    return (outputs * ln_scale) @ unembed_column / final_resid.pow(2).mean().add(eps).sqrt()


@pytest.mark.parametrize("check, solution", [
    (lesson04.check_store_last_position, store_last_position),
    (lesson04.check_logit_lens, logit_lens),
    (lesson04.check_direct_logit_attribution, direct_logit_attribution)])
def test_right_answers_pass_and_unattempted_defer(check, solution, capsys):
    assert check(solution) is True
    assert "correct" in capsys.readouterr().out
    assert check(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


def _store(value):
    def hook(activation, hook, store):
        store[hook.name] = value(activation)
        return activation
    return hook


@pytest.mark.parametrize("wrong, hint", [
    (lambda a, h, s: None, "returned None"),
    (lambda a, h, s: a * 2, "unchanged"),
    (lambda a, h, s: a, "store the vector under hook.name"),
    (_store(lambda a: a.clone()), "you stored every position"),
    (_store(lambda a: a[:, 0].clone()), "position 0"),
    (_store(lambda a: a[0].clone()), "keep the batch dimension"),
    (_store(lambda a: a[:, -1]), "a copy"),
])
def test_store_last_position_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson04.check_store_last_position(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda r, w, U, eps: r @ U, "final RMSNorm"),
    (lambda r, w, U, eps: (r / (r.pow(2).mean(-1, keepdim=True) + eps).sqrt()) @ U, "learned scale"),
    (lambda r, w, U, eps: (r * w) @ U, "divide by the RMS"),
    (lambda r, w, U, eps: (r / r.norm(dim=-1, keepdim=True) * w) @ U, "root \\*mean\\* square"),
    (lambda r, w, U, eps: ((r - r.mean(-1, keepdim=True)) / ((r - r.mean(-1, keepdim=True)).pow(2).mean(
        -1, keepdim=True) + eps).sqrt() * w) @ U, "LayerNorm"),
    (lambda r, w, U, eps: (r / (r.pow(2).mean(-1, keepdim=True).sqrt() + eps) * w) @ U, "inside the square root"),
])
def test_logit_lens_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson04.check_logit_lens(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda o, f, w, u, eps: o @ u, "through the final norm"),
    (lambda o, f, w, u, eps: o @ u / (f.pow(2).mean() + eps).sqrt(), "learned scale"),
    (lambda o, f, w, u, eps: o @ (w * u), "divide by the final residual's RMS"),
    (lambda o, f, w, u, eps: o @ (w * u) / (o.pow(2).mean(-1) + eps).sqrt(), "the same number"),
])
def test_direct_logit_attribution_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson04.check_direct_logit_attribution(wrong)


def test_predictions_never_raise_and_explain(capsys):
    assert lesson04.check_prediction_sink(None, 120.0) is None
    assert "no prediction written" in capsys.readouterr().out
    assert lesson04.check_prediction_sink("c", 120.0) is True
    assert lesson04.check_prediction_sink("(a)", 120.0) is False
    assert "The answer is (c)" in capsys.readouterr().out
    assert lesson04.check_prediction_lens_layer(22, 24, 30) is True
    assert lesson04.check_prediction_lens_layer(5, 24, 30) is False
    assert lesson04.check_prediction_lens_layer("soon", 24, 30) is False
    assert lesson04.check_prediction_lens_layer(None, None, 30) is None
