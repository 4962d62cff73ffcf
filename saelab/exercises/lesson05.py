"""Checkers for lesson 05 (an SAE on a real model): cleaning a harvest, the input scale, CE loss recovered."""

from __future__ import annotations

import torch

from saelab.exercises.checking import ExerciseError, check_close, checker, run_learner_function


def reference_clean_activations(resid: torch.Tensor, max_norm: float) -> torch.Tensor:
    """(batch, pos, d_model) residuals -> (tokens, d_model): position 0 dropped, rows with norm > max_norm dropped."""
    rows = resid[:, 1:].reshape(-1, resid.shape[-1])
    return rows[rows.norm(dim=-1) <= max_norm]


def reference_normalisation_scale(acts: torch.Tensor) -> torch.Tensor:
    """The factor that gives ``acts`` unit mean squared norm: 1 / sqrt(mean over rows of ||x||^2)."""
    return acts.pow(2).sum(-1).mean().rsqrt()


def reference_loss_recovered(clean: torch.Tensor, spliced: torch.Tensor, zero_ablated: torch.Tensor) -> torch.Tensor:
    """Where the spliced loss sits between the zero-ablated floor (0) and the clean model (1)."""
    return (zero_ablated - spliced) / (zero_ablated - clean)


def _kept(rows: torch.Tensor, max_norm: float) -> torch.Tensor:
    return rows[rows.norm(dim=-1) <= max_norm]


def _match_mistakes(actual, hints: list[tuple[torch.Tensor, str]]) -> None:
    """Name a typical mistake even when it changes the number of rows (``check_close`` stops at the shape)."""
    if not isinstance(actual, torch.Tensor):
        return
    for mistake, hint in hints:
        if mistake.shape == actual.shape and torch.allclose(actual.detach().float(), mistake, atol=1e-5):
            raise ExerciseError(f"clean_activations(resid, max_norm) is not right: {hint}")


def _harvest_like(seed: int = 0):
    """A small (batch, pos, d_model) stand-in for a harvest: a constant huge-ish position 0 (the sink), ordinary
    tokens of varied norm, and a few outliers far above ``max_norm``."""
    g = torch.Generator().manual_seed(seed)
    batch, pos, d = 5, 9, 16
    resid = torch.randn(batch, pos, d, generator=g)
    resid = resid / resid.norm(dim=-1, keepdim=True) * (10 + 30 * torch.rand(batch, pos, 1, generator=g))
    sink = torch.randn(d, generator=g)
    resid[:, 0] = sink / sink.norm() * 80  # below max_norm on purpose: only dropping position 0 removes it
    resid[1, 1] *= 25  # outliers: a newline at position 1, a token mid-row
    resid[3, 6] *= 40
    return resid, 100.0


@checker("clean_activations")
def check_clean_activations(clean_activations) -> None:
    """``clean_activations(resid, max_norm)`` -> (tokens, d_model) without position 0 and without outliers."""
    resid, max_norm = _harvest_like()
    expected = reference_clean_activations(resid, max_norm)
    actual = run_learner_function(clean_activations, resid.clone(), max_norm, name="clean_activations")
    d = resid.shape[-1]
    every = resid.reshape(-1, d)
    no_bos = resid[:, 1:].reshape(-1, d)
    if isinstance(actual, torch.Tensor) and actual.ndim == 3:
        raise ExerciseError(f"clean_activations returned shape {tuple(actual.shape)}: flatten (batch, pos) into one "
                            "dimension of tokens, giving (tokens, d_model)")
    _match_mistakes(actual, [
        (_kept(every, max_norm), "position 0 is still there: drop it (resid[:, 1:]) — it is the "
                                                "BOS attention sink, the same huge vector in every row"),
        (no_bos, "the outliers are still there: keep only rows whose norm is at most max_norm"),
        (every, "drop position 0 (the BOS attention sink) and the rows whose norm is above max_norm"),
        (no_bos[no_bos.pow(2).sum(-1) <= max_norm], "compare the norm (vector length, .norm(dim=-1)) with "
                                                     "max_norm, not the squared norm"),
        (no_bos[no_bos.norm(dim=-1) > max_norm], "you kept only the outliers: keep rows with norm <= max_norm"),
        (_kept(resid[:, :-1].reshape(-1, d), max_norm),
         "you dropped the last position; position 0 (the first) is the attention sink"),
        (_kept(resid[:, 1:].transpose(0, 1).reshape(-1, d), max_norm),
         "keep the tokens in reading order, sequence by sequence: flatten (batch, pos), not (pos, batch)"),
    ])
    check_close(actual, expected, what="clean_activations(resid, max_norm)")


@checker("normalisation_scale")
def check_normalisation_scale(normalisation_scale) -> None:
    """``normalisation_scale(acts)`` -> the number s such that ``s * acts`` has mean squared norm 1."""
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(400, 24, generator=g) * (1 + 5 * torch.rand(400, 1, generator=g)) + 3.0
    expected = reference_normalisation_scale(acts)
    actual = run_learner_function(normalisation_scale, acts.clone(), name="normalisation_scale")
    if isinstance(actual, (int, float)):
        actual = torch.tensor(float(actual))
    if isinstance(actual, torch.Tensor) and actual.numel() != 1:
        raise ExerciseError(f"normalisation_scale should return one number, got shape {tuple(actual.shape)}: "
                            "average the squared norms over all rows")
    if isinstance(actual, torch.Tensor):
        actual = actual.reshape(())
    mean_sq = acts.pow(2).sum(-1).mean()
    check_close(actual, expected, what="normalisation_scale(acts)", rtol=1e-4, hints=[
        (mean_sq.sqrt(), "that is the typical norm itself; the scale is its inverse (multiplying by it must "
                         "bring the norm to 1)"),
        (1 / mean_sq, "take the square root: the scale multiplies the vectors, so it is 1 / sqrt(mean ||x||^2)"),
        (mean_sq, "the scale is 1 / sqrt(mean ||x||^2); you returned the mean squared norm itself"),
        (acts.pow(2).mean().rsqrt(), "average the squared norm ||x||^2 (summed over d_model) over rows, not each "
                                     "entry squared over rows and dimensions: your scale leaves a mean squared "
                                     "norm of d_model, not 1"),
        (1 / acts.norm(dim=-1).mean(), "unit mean *squared* norm: average ||x||^2 first, then take the square "
                                       "root (the mean norm is a little smaller)"),
        ((acts - acts.mean(0)).pow(2).sum(-1).mean().rsqrt(), "don't subtract the mean: the scale is about the raw "
                                                               "vectors' length (the SAE's b_dec handles the centre)"),
    ])


@checker("loss_recovered")
def check_loss_recovered(loss_recovered) -> None:
    """``loss_recovered(clean, spliced, zero_ablated)`` -> the fraction of the loss gap recovered (elementwise)."""
    clean = torch.tensor([3.5, 3.5, 2.0, 4.0])
    spliced = torch.tensor([3.7, 5.0, 2.1, 9.0])
    zero = torch.tensor([15.0, 15.0, 10.0, 8.0])  # the last SAE is worse than deleting the activation
    expected = reference_loss_recovered(clean, spliced, zero)
    actual = run_learner_function(loss_recovered, clean.clone(), spliced.clone(), zero.clone(),
                                  name="loss_recovered")
    if isinstance(actual, (int, float)):
        raise ExerciseError("loss_recovered returned one number for four SAEs: use tensor arithmetic "
                            "(no float(), .item() or Python max/min), so it works elementwise")
    check_close(actual, expected, what="loss_recovered(clean, spliced, zero_ablated)", hints=[
        ((spliced - clean) / (zero - clean), "that is the fraction of the gap *lost* (1 - recovered): measure "
                                             "from the zero-ablated floor, (zero_ablated - spliced) / ..."),
        ((zero - spliced) / zero, "divide by the whole gap between the floor and the clean model, "
                                  "zero_ablated - clean, not by zero_ablated alone"),
        (expected.clamp(0, 1),
         "don't clip to [0, 1]: an SAE worse than zero-ablation honestly scores below 0"),
        ((zero - clean) / (zero - spliced), "numerator and denominator are swapped: recovered = "
                                            "(zero_ablated - spliced) / (zero_ablated - clean)"),
        (clean / spliced, "a ratio of losses says little: measure where the spliced loss sits between the "
                          "zero-ablated floor (0) and the clean model (1)"),
        ((spliced - clean) / clean, "that is the relative loss increase; the recovered fraction uses the "
                                    "zero-ablated loss as its floor"),
        ((zero - spliced) / (spliced - clean), "the denominator is the full gap zero_ablated - clean"),
    ])
