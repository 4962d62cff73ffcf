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


def _rows(resid):
    return resid[:, 1:].reshape(-1, resid.shape[-1])


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
    (lambda r, m: _rows(r)[_rows(r).pow(2).sum(-1) <= m], "not the squared norm"),
    (lambda r, m: _rows(r)[_rows(r).norm(dim=-1) > m], "kept only the outliers"),
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


def fvu(x, x_hat):
    return ((x - x_hat) ** 2).sum() / ((x - x.mean(0, keepdim=True)) ** 2).sum()


def l0(codes):
    return (codes > 0).sum(-1).float().mean()


def dead_fraction(codes):
    return 1 - (codes > 0).any(0).float().mean()


def splice_hook(activation, hook, sae):
    out = sae.decode(sae.encode(activation))
    return torch.cat([activation[:, :1], out[:, 1:]], dim=1)


def training_step(sae, optimizer, batch):
    optimizer.zero_grad()
    loss = ((sae.decode(sae.encode(batch)) - batch) ** 2).sum(-1).mean()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)
    return loss.item()


@pytest.mark.parametrize("check, solution", [
    (lesson05.check_fvu, fvu), (lesson05.check_fvu, lambda x, x_hat: float(fvu(x, x_hat))),
    (lesson05.check_l0, l0), (lesson05.check_dead_fraction, dead_fraction),
    (lesson05.check_splice_hook, splice_hook), (lesson05.check_training_step, training_step)])
def test_new_right_answers_pass_and_unattempted_defer(check, solution, capsys):
    assert check(solution) is True
    assert "correct" in capsys.readouterr().out
    assert check(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, y: ((x - y) ** 2).sum() / (x ** 2).sum(), "centre the denominator"),
    (lambda x, y: (((x - y) ** 2).sum(-1) / ((x - x.mean(0)) ** 2).sum(-1)).mean(), "mean of per-token ratios"),
    (lambda x, y: ((x - y) ** 2).mean(), "this is the MSE"),
    (lambda x, y: 1 - fvu(x, y), r"\*explained\*"),
    (lambda x, y: ((x - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum(), "not of the reconstruction"),
    (lambda x, y: ((x - y) ** 2).sum(-1), "one number"),
])
def test_fvu_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson05.check_fvu(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda c: c.sum(-1).mean(), "L1 norm"),
    (lambda c: (c != 0).float().mean(), "fraction of latents active"),
    (lambda c: (c != 0).float().sum(), "divide by the number of tokens"),
    (lambda c: (c != 0).any(0).float().sum(), "fire on some token"),
    (lambda c: (c != 0).float().sum(-1), "one number"),
])
def test_l0_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson05.check_l0(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda c: (c == 0).float().mean(), "zero \\*entries\\*"),
    (lambda c: ((c > 0).sum(0) == 0).float().sum(), "number of dead latents"),
    (lambda c: ((c > 0).sum(0) > 0).float().mean(), "fraction of latents alive"),
    (lambda c: ((c == 0).sum(-1) == c.shape[-1]).float().mean(), "tokens with no active latent"),
    (lambda c: ((c > 0).sum(0) <= 1).float().mean(), "rare, not dead"),
])
def test_dead_fraction_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson05.check_dead_fraction(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda a, h, s: None, "returned None"),
    (lambda a, h, s: s.encode(a), "latent codes"),
    (lambda a, h, s: a, "came back unchanged"),
    (lambda a, h, s: s.decode(s.encode(a)), "position 0 must keep its real value"),
    (lambda a, h, s: a - s.decode(s.encode(a)), "the SAE's error"),
    (lambda a, h, s: torch.cat([s.decode(s.encode(a))[:, :1], a[:, 1:]], 1), "the other way round"),
])
def test_splice_hook_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson05.check_splice_hook(wrong)


def _step(zero_grad=True, step=True, normalise=True, reduce="sum", returns=True):
    def training_step(sae, optimizer, batch):
        if zero_grad:
            optimizer.zero_grad()
        error = (sae.decode(sae.encode(batch)) - batch) ** 2
        loss = error.sum(-1).mean() if reduce == "sum" else error.mean()
        loss.backward()
        if step:
            optimizer.step()
        if normalise:
            with torch.no_grad():
                sae.normalize_decoder_()
        return loss.detach() if returns else None
    return training_step


@pytest.mark.parametrize("wrong, hint", [
    (_step(returns=False), "returned None"),
    (_step(step=False), "did not move"),
    (_step(normalise=False), "unit length"),
    (_step(zero_grad=False), "zero_grad"),
    (_step(reduce="mean"), "sum\\* over d_in"),
])
def test_training_step_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson05.check_training_step(wrong)


def test_predictions_never_raise_and_explain(capsys):
    assert lesson05.check_prediction_floor(None, 15.4, 49152) is None
    assert "no prediction written" in capsys.readouterr().out
    assert lesson05.check_prediction_floor("c", 15.4, 49152) is True
    assert lesson05.check_prediction_floor("b", 15.4, 49152) is False
    assert lesson05.check_prediction_fvu(0.25, 0.3) is True
    assert lesson05.check_prediction_fvu(0.9, 0.3) is False
    assert lesson05.check_prediction_fvu("", 0.3) is None
