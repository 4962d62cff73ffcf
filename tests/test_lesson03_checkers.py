"""Lesson 03 checkers: right answers pass, unattempted ones defer, typical mistakes get their named hint."""

import pytest
import torch

from saelab.exercises import ExerciseError, lesson03


def encode_decode(x, W_enc, b_enc, W_dec, b_dec):
    f = ((x - b_dec) @ W_enc + b_enc).relu()
    return f, f @ W_dec + b_dec


def sae_loss(x, f, recon, W_dec, l1_coefficient):
    return (recon - x).pow(2).sum(-1).mean() + l1_coefficient * (f * W_dec.norm(dim=1)).sum(-1).mean()


def l0_and_fvu(x, recon, f):
    return (f > 0).float().sum(-1).mean(), (recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()


def topk_activation(pre, k):
    values, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, values.relu())


def not_attempted(*args):
    raise NotImplementedError()


@pytest.mark.parametrize("check, solution", [
    (lesson03.check_encode_decode, encode_decode), (lesson03.check_sae_loss, sae_loss),
    (lesson03.check_l0_and_fvu, l0_and_fvu), (lesson03.check_topk_activation, topk_activation)])
def test_right_answers_pass_and_unattempted_defer(check, solution, capsys):
    assert check(solution) is True
    assert "correct" in capsys.readouterr().out
    assert check(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, We, be, Wd, bd: ((x - bd) @ We + be, (x - bd) @ We @ Wd + bd), "apply the ReLU"),
    (lambda x, We, be, Wd, bd: encode_decode(x, We, be, Wd, torch.zeros_like(bd)), "subtract b_dec"),
    (lambda x, We, be, Wd, bd: (lambda f: (f, f @ Wd))(((x - bd) @ We + be).relu()), "decoder bias"),
    (lambda x, We, be, Wd, bd: (lambda f: (f, f @ Wd + bd))(((x - bd) @ We).relu()), "b_enc is missing"),
    (lambda x, We, be, Wd, bd: ((x - bd) @ We + be).relu(), "should return a pair"),
])
def test_encode_decode_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson03.check_encode_decode(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, f, r, Wd, c: (r - x).pow(2).sum(-1).mean() + c * f.sum(-1).mean(), "decoder row's norm"),
    (lambda x, f, r, Wd, c: (r - x).pow(2).mean() + c * (f * Wd.norm(dim=1)).sum(-1).mean(), "sum the squared error"),
    (lambda x, f, r, Wd, c: (r - x).pow(2).sum(-1).mean(), "sparsity penalty is missing"),
    (lambda x, f, r, Wd, c: sae_loss(x, f, r, Wd, 1.0), "multiply the sparsity term"),
    (lambda x, f, r, Wd, c: (r - x).pow(2).sum(-1), "should return one number"),
])
def test_sae_loss_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson03.check_sae_loss(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, r, f: ((f > 0).float().sum(), l0_and_fvu(x, r, f)[1]), "not the total over the batch"),
    (lambda x, r, f: (f.sum(-1).mean(), l0_and_fvu(x, r, f)[1]), "count the active latents"),
    (lambda x, r, f: (l0_and_fvu(x, r, f)[0], (r - x).pow(2).sum() / x.pow(2).sum()), "subtract the mean of x"),
    (lambda x, r, f: (l0_and_fvu(x, r, f)[0], 1 - l0_and_fvu(x, r, f)[1]), "variance \\*explained\\*"),
])
def test_l0_fvu_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson03.check_l0_and_fvu(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda pre, k: torch.zeros_like(pre).scatter(-1, pre.topk(k, -1)[1], pre.topk(k, -1)[0]), "apply a ReLU"),
    (lambda pre, k: torch.zeros_like(pre).scatter(-1, pre.topk(k, -1, largest=False)[1],
                                                  pre.topk(k, -1, largest=False)[0].relu()), "k smallest"),
    (lambda pre, k: pre.relu(), "only the k largest"),
    (lambda pre, k: pre.topk(k, -1), "not the \\(values, indices\\) pair"),
])
def test_topk_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson03.check_topk_activation(wrong)


def test_a_crash_in_the_learners_code_is_reported_not_raised_raw():
    with pytest.raises(ExerciseError, match="topk_activation raised RuntimeError"):
        lesson03.check_topk_activation(lambda pre, k: pre.topk(100, dim=-1))
