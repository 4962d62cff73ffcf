"""Lesson 08 checkers: right answers pass, unattempted ones defer, typical mistakes get their named hint."""

import pytest
import torch

from saelab.exercises import ExerciseError, lesson08


def decoder_cosines(W_a, W_b):
    return (W_a / W_a.norm(dim=1, keepdim=True)) @ (W_b / W_b.norm(dim=1, keepdim=True)).t()


def f1_per_latent(codes, labels):
    fires, y = (codes > 0).float(), labels.float()
    tp = y @ fires
    precision, recall = tp / fires.sum(0).clamp_min(1), tp / y.sum()
    return 2 * precision * recall / (precision + recall).clamp_min(1e-12)


def absorbed_tokens(codes, W_dec, w, counted, main, threshold):
    top_value, top = (codes * (W_dec @ w)).max(dim=1)
    cosine = (W_dec / W_dec.norm(dim=1, keepdim=True)) @ (w / w.norm())
    return counted & (codes[:, main] <= 0) & (top_value > 0) & (top != main) & (cosine[top] >= threshold)


def nested_prefix_loss(x, codes, W_dec, b_dec, prefixes):
    return torch.stack([(codes[:, :m] @ W_dec[:m] + b_dec - x).pow(2).sum(-1).mean() for m in prefixes]).mean()


def not_attempted(*args):
    raise NotImplementedError()


@pytest.mark.parametrize("check, solution", [
    (lesson08.check_decoder_cosines, decoder_cosines), (lesson08.check_f1_per_latent, f1_per_latent),
    (lesson08.check_absorbed_tokens, absorbed_tokens), (lesson08.check_nested_prefix_loss, nested_prefix_loss)])
def test_right_answers_pass_and_unattempted_defer(check, solution, capsys):
    assert check(solution) is True
    assert "correct" in capsys.readouterr().out
    assert check(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda a, b: a @ b.t(), "these are dot products"),
    (lambda a, b: (a / a.norm(dim=0, keepdim=True)) @ (b / b.norm(dim=0, keepdim=True)).t(), "each decoder \\*row\\*"),
    (lambda a, b: (a / a.norm(dim=1, keepdim=True)) @ b.t(), "rows of both dictionaries"),
    (lambda a, b: decoder_cosines(b, a), "transposed"),
])
def test_decoder_cosines_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson08.check_decoder_cosines(wrong)


def _f1_of_values(codes, labels):
    y = labels.float()
    tp = y @ codes
    precision, recall = tp / codes.sum(0).clamp_min(1e-12), tp / y.sum()
    return 2 * precision * recall / (precision + recall).clamp_min(1e-12)


def _f1_nan(codes, labels):
    fires, y = (codes > 0).float(), labels.float()
    tp = y @ fires
    precision, recall = tp / fires.sum(0), tp / y.sum()
    return 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("wrong, hint", [
    (_f1_of_values, "count firings"),
    (_f1_nan, "gave NaN"),
    (lambda c, y: (y.float() @ (c > 0).float()) / (c > 0).float().sum(0).clamp_min(1), "precision alone"),
])
def test_f1_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson08.check_f1_per_latent(wrong)


def _by_activation(codes, W_dec, w, counted, main, threshold):
    top = codes.argmax(dim=1)
    cosine = (W_dec / W_dec.norm(dim=1, keepdim=True)) @ (w / w.norm())
    return counted & (codes[:, main] <= 0) & (codes.max(1).values > 0) & (cosine[top] >= threshold)


def _no_threshold(codes, W_dec, w, counted, main, threshold):
    return counted & (codes[:, main] <= 0) & ((codes * (W_dec @ w)).max(1).values > 0)


@pytest.mark.parametrize("wrong, hint", [
    (_by_activation, "not the most active one"),
    (_no_threshold, "must be aligned with the probe"),
    (lambda c, W, w, counted, m, t: absorbed_tokens(c, W, w, torch.ones_like(counted), m, t), "`counted` tokens"),
    (lambda c, W, w, counted, m, t: torch.ones(3, dtype=torch.bool), "one bool per token"),
])
def test_absorbed_tokens_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson08.check_absorbed_tokens(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, c, W, b, p: (c @ W + b - x).pow(2).sum(-1).mean(), "plain loss of the whole dictionary"),
    (lambda x, c, W, b, p: torch.stack([(c[:, :m] @ W[:m] + b - x).pow(2).sum(-1).mean() for m in p]).sum(),
     "don't sum them"),
    (lambda x, c, W, b, p: nested_prefix_loss(x, c, W, torch.zeros_like(b), p), "needs b_dec"),
    (lambda x, c, W, b, p: torch.stack([(c[:, :m] @ W[:m] + b - x).pow(2).mean() for m in p]).mean(),
     "sum the squared error over d_in"),
    (lambda x, c, W, b, p: torch.stack([(c[:, :m] @ W[:m] + b - x).pow(2).sum(-1) for m in p]).mean(0),
     "one number"),
])
def test_nested_prefix_loss_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson08.check_nested_prefix_loss(wrong)


def test_nested_prefix_loss_reference_matches_the_sae():
    from saelab.sae import SAE, SAEConfig

    sae = SAE(SAEConfig(d_in=6, d_sae=16, architecture="topk", k=4, matryoshka_groups=3, aux_k_coefficient=0.0),
              seed=0)
    x = torch.randn(30, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = sae(x)
        codes = sae.encode(x)
        expected = lesson08.reference_nested_prefix_loss(x, codes, sae.W_dec, sae.b_dec, [4, 8, 16])
    assert torch.allclose(out.loss, expected, atol=1e-5)


def test_prediction_says_what_the_run_gave(capsys):
    assert lesson08.check_prediction_miss_rate("c", 0.5, 0.7) is True
    assert lesson08.check_prediction_miss_rate("a", 0.5, 0.7) is False
    assert lesson08.check_prediction_miss_rate(None, 0.5, 0.51) is None
    assert "stays within 2 points" in capsys.readouterr().out
