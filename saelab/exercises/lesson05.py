"""Checkers for lesson 05 (an SAE on a real model): cleaning a harvest, the input scale, CE loss recovered."""

from __future__ import annotations

import math
from functools import partial

import torch

from saelab.exercises import checking
from saelab.exercises.checking import ExerciseError, check_close, checker, one_number, run_learner_function


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
        (_kept(every, max_norm), ("position 0 is still there: drop it (resid[:, 1:]) — it is the "
                                                "BOS attention sink, the same huge vector in every row")),
        (no_bos, "the outliers are still there: keep only rows whose norm is at most max_norm"),
        (every, "drop position 0 (the BOS attention sink) and the rows whose norm is above max_norm"),
        (no_bos[no_bos.pow(2).sum(-1) <= max_norm], ("compare the norm (vector length, .norm(dim=-1)) with "
                                                     "max_norm, not the squared norm")),
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
    actual = one_number(actual, "normalisation_scale", "average the squared norms over all rows")
    mean_sq = acts.pow(2).sum(-1).mean()
    check_close(actual, expected, what="normalisation_scale(acts)", rtol=1e-4, hints=[
        (mean_sq.sqrt(), ("that is the typical norm itself; the scale is its inverse (multiplying by it must "
                         "bring the norm to 1)")),
        (1 / mean_sq, "take the square root: the scale multiplies the vectors, so it is 1 / sqrt(mean ||x||^2)"),
        (mean_sq, "the scale is 1 / sqrt(mean ||x||^2); you returned the mean squared norm itself"),
        (acts.pow(2).mean().rsqrt(), ("average the squared norm ||x||^2 (summed over d_model) over rows, not each "
                                     "entry squared over rows and dimensions: your scale leaves a mean squared "
                                     "norm of d_model, not 1")),
        (1 / acts.norm(dim=-1).mean(), ("unit mean *squared* norm: average ||x||^2 first, then take the square "
                                       "root (the mean norm is a little smaller)")),
        ((acts - acts.mean(0)).pow(2).sum(-1).mean().rsqrt(), ("don't subtract the mean: the scale is about the raw "
                                                               "vectors' length (the SAE's b_dec handles the centre)")),
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
        ((spliced - clean) / (zero - clean), ("that is the fraction of the gap *lost* (1 - recovered): measure "
                                             "from the zero-ablated floor, (zero_ablated - spliced) / ...")),
        ((zero - spliced) / zero, ("divide by the whole gap between the floor and the clean model, "
                                  "zero_ablated - clean, not by zero_ablated alone")),
        (expected.clamp(0, 1),
         "don't clip to [0, 1]: an SAE worse than zero-ablation honestly scores below 0"),
        ((zero - clean) / (zero - spliced), ("numerator and denominator are swapped: recovered = "
                                            "(zero_ablated - spliced) / (zero_ablated - clean)")),
        (clean / spliced, ("a ratio of losses says little: measure where the spliced loss sits between the "
                          "zero-ablated floor (0) and the clean model (1)")),
        ((spliced - clean) / clean, ("that is the relative loss increase; the recovered fraction uses the "
                                    "zero-ablated loss as its floor")),
        ((zero - spliced) / (spliced - clean), "the denominator is the full gap zero_ablated - clean"),
    ])


def reference_fvu(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained over (tokens, d_model): squared error over squared distance from the mean."""
    return (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()


@checker("fvu")
def check_fvu(fvu) -> None:
    """``fvu(x, x_hat)`` -> one number: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the tokens."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, 12, generator=g) * (1 + 3 * torch.rand(300, 1, generator=g)) + 5.0  # a large mean
    x_hat = x + torch.randn(300, 12, generator=g) * 0.8
    expected = reference_fvu(x, x_hat)
    actual = run_learner_function(fvu, x.clone(), x_hat.clone(), name="fvu")
    actual = one_number(actual, "fvu", "sum the squared errors over tokens and dimensions before dividing")
    error = (x - x_hat).pow(2)
    check_close(actual, expected, what="fvu(x, x_hat)", rtol=1e-4, hints=[
        (error.sum() / x.pow(2).sum(), ("centre the denominator: the variance is measured around the mean of x, "
                                       "not around zero (the residual stream has a large mean, which flatters "
                                       "the SAE)")),
        ((error.sum(-1) / (x - x.mean(0)).pow(2).sum(-1)).mean(),
         "this is the mean of per-token ratios: divide the *total* squared error by the *total* variance"),
        (error.mean(), "this is the MSE; FVU divides the squared error by the variance around the mean"),
        (1 - expected, "that is the fraction of variance *explained*; FVU is the part left unexplained"),
        (error.sum() / (x_hat - x_hat.mean(0)).pow(2).sum(), ("divide by the variance of the input x, not of the "
                                                             "reconstruction")),
    ])


def reference_l0(codes: torch.Tensor) -> torch.Tensor:
    """Mean number of latents active (non-zero) per token of (tokens, d_sae) codes."""
    return (codes != 0).float().sum(-1).mean()


@checker("l0")
def check_l0(l0) -> None:
    """``l0(codes)`` -> the mean number of non-zero latents per token."""
    g = torch.Generator().manual_seed(3)
    codes = torch.rand(50, 30, generator=g) * (torch.rand(50, 30, generator=g) < 0.2)
    codes[:, 0] = 5.0  # one always-on latent with large values
    expected = reference_l0(codes)
    actual = run_learner_function(l0, codes.clone(), name="l0")
    actual = one_number(actual, "l0", "average the per-token counts over tokens")
    check_close(actual, expected, what="l0(codes)", rtol=1e-5, hints=[
        (codes.sum(-1).mean(), ("this is the mean *sum* of activations (an L1 norm); L0 counts the non-zero "
                               "latents")),
        ((codes != 0).float().mean(), ("this is the fraction of latents active; L0 is their number per token "
                                      "(multiply by d_sae, or sum over latents before averaging)")),
        ((codes != 0).float().sum(), ("this counts every active latent of every token; divide by the number of "
                                     "tokens")),
        ((codes != 0).any(0).float().sum(), ("this counts latents that fire on some token; L0 counts, per token, "
                                            "the latents that fire on it")),
    ])


def reference_dead_fraction(codes: torch.Tensor) -> torch.Tensor:
    """The fraction of latents that never fire (are zero on every token) in (tokens, d_sae) codes."""
    return (codes > 0).sum(0).eq(0).float().mean()


@checker("dead_fraction")
def check_dead_fraction(dead_fraction) -> None:
    """``dead_fraction(codes)`` -> the fraction of latents that fire on no token at all."""
    g = torch.Generator().manual_seed(4)
    codes = torch.rand(40, 25, generator=g) * (torch.rand(40, 25, generator=g) < 0.15)
    codes[:, :6] = 0.0
    codes[3, 2] = 0.7  # latent 2 fires once: rare, not dead
    expected = reference_dead_fraction(codes)
    actual = run_learner_function(dead_fraction, codes.clone(), name="dead_fraction")
    actual = one_number(actual, "dead_fraction")
    fired = (codes > 0).sum(0)
    check_close(actual, expected, what="dead_fraction(codes)", rtol=1e-5, hints=[
        ((codes == 0).float().mean(), ("this is the fraction of zero *entries*; a latent is dead when it is zero on "
                                      "every token: count per latent (over dim 0) first")),
        ((fired == 0).float().sum(), "this is the number of dead latents; return the fraction (divide by d_sae)"),
        ((fired > 0).float().mean(), "this is the fraction of latents alive: dead = never fired"),
        (((codes == 0).sum(-1) == codes.shape[-1]).float().mean(),
         "this counts tokens with no active latent; dead latents are the columns that are zero on every token"),
        ((fired <= 1).float().mean(), "a latent that fires once is rare, not dead: dead means zero times"),
    ])


def reference_splice_hook(activation: torch.Tensor, hook, sae) -> torch.Tensor:
    """Replace the activation by the SAE's reconstruction, except position 0 (the attention sink)."""
    reconstruction = sae.decode(sae.encode(activation))
    reconstruction[:, 0] = activation[:, 0]
    return reconstruction


def _tiny_sae(seed: int = 0):
    from saelab.sae import SAE, SAEConfig

    sae = SAE(SAEConfig(d_in=8, d_sae=24, architecture="topk", k=3), seed=seed)
    with torch.no_grad():  # a trained-looking SAE: a non-zero b_dec, encoder not the decoder's transpose
        sae.b_dec.copy_(torch.randn(8, generator=torch.Generator().manual_seed(seed + 10)))
        sae.W_enc.add_(0.3 * torch.randn(sae.W_enc.shape, generator=torch.Generator().manual_seed(seed + 11)))
    return sae


@checker("splice_hook")
def check_splice_hook(splice_hook) -> None:
    """``splice_hook(activation, hook, sae)`` -> the activation with every position but 0 reconstructed."""
    sae = _tiny_sae()
    activation = torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(9)) * 2
    with torch.no_grad():
        expected = reference_splice_hook(activation.clone(), None, sae)
        actual = run_learner_function(splice_hook, activation.clone(), None, sae, name="splice_hook")
        codes = sae.encode(activation)
        full = sae.decode(codes)
    if actual is None:
        raise ExerciseError("the hook returned None: return the reconstruction, which replaces the activation")
    if isinstance(actual, torch.Tensor) and actual.shape == codes.shape:
        raise ExerciseError("these are the SAE's latent codes (d_sae per token); return the reconstruction, "
                            "sae.decode(sae.encode(activation))")
    check_close(actual, expected, what="the spliced activation", hints=[
        (activation, "the activation came back unchanged: replace it by the SAE's reconstruction"),
        (full, "position 0 must keep its real value: the SAE never trained on the attention sink"),
        (activation - full, "this is the SAE's error (activation - reconstruction); return the reconstruction"),
        (torch.cat([full[:, :1], activation[:, 1:]], 1), ("it is the other way round: keep position 0, "
                                                         "reconstruct the rest")),
    ])


def reference_training_step(sae, optimizer, batch: torch.Tensor) -> torch.Tensor:
    """One step on the reconstruction loss (squared error summed over d_in, mean over tokens); decoder rows
    renormalised to unit length afterwards. Returns the loss before the step."""
    return _training_step(sae, optimizer, batch)


def _training_step(sae, optimizer, batch: torch.Tensor, *, zero_grad: bool = True,
                   sum_over_d_in: bool = True) -> torch.Tensor:
    """The reference step, or (a flag off) one of the two mistakes the checker names."""
    if zero_grad:
        optimizer.zero_grad()
    squared_error = (sae.decode(sae.encode(batch)) - batch).pow(2)
    loss = squared_error.sum(-1).mean() if sum_over_d_in else squared_error.mean()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        sae.normalize_decoder_()
    return loss.detach()


def _step_with(seed, step, stale_grads: bool, **loss_kwargs):
    sae = _tiny_sae(seed)
    sae.normalize_decoder_()
    batch = torch.randn(64, 8, generator=torch.Generator().manual_seed(seed + 20)) * 3
    optimizer = torch.optim.SGD(sae.parameters(), lr=0.01)
    if stale_grads:  # gradients left over from an earlier step, as in a real loop
        for parameter in sae.parameters():
            parameter.grad = torch.full_like(parameter, 0.5)
    loss = step(sae, optimizer, batch)
    return sae, loss


@checker("training_step")
def check_training_step(training_step) -> None:
    """``training_step(sae, optimizer, batch)`` -> the loss; the SAE's weights moved by one optimizer step."""
    expected_sae, expected_loss = _step_with(0, reference_training_step, stale_grads=True)
    sae, loss = _step_with(0, lambda s, o, b: run_learner_function(training_step, s, o, b, name="training_step"),
                           stale_grads=True)
    if loss is None:
        raise ExerciseError("training_step returned None: return the loss (a tensor with one number)")
    if isinstance(loss, torch.Tensor) and loss.requires_grad:
        loss = loss.detach()
    initial = _tiny_sae(0)
    initial.normalize_decoder_()
    if torch.allclose(sae.W_dec, initial.W_dec, atol=1e-7) and torch.allclose(sae.W_enc, initial.W_enc, atol=1e-7):
        raise ExerciseError("the weights did not move: call loss.backward() and then optimizer.step()")
    norms = sae.W_dec.detach().norm(dim=1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
        raise ExerciseError("the decoder rows are no longer unit length: after the step, renormalise them "
                            "(sae.normalize_decoder_() under torch.no_grad())")
    no_zero, _ = _step_with(0, partial(_training_step, zero_grad=False), stale_grads=True)
    mean_all, _ = _step_with(0, partial(_training_step, sum_over_d_in=False), stale_grads=True)
    for mistake, hint in ((no_zero, ("the gradients of an earlier step were added to this one: call "
                                    "optimizer.zero_grad() before loss.backward()")),
                          (mean_all, ("average over tokens but *sum* over d_in: (error ** 2).sum(-1).mean(); a "
                                     "mean over every entry divides the loss (and the step) by d_in"))):
        if torch.allclose(sae.W_enc.detach(), mistake.W_enc.detach(), atol=1e-6):
            raise ExerciseError(f"training_step is not right: {hint}")
    check_close(sae.W_enc.detach(), expected_sae.W_enc.detach(), what="the encoder after one step", atol=1e-5)
    check_close(sae.W_dec.detach(), expected_sae.W_dec.detach(), what="the decoder after one step", atol=1e-5)
    if isinstance(loss, (int, float)):
        loss = torch.tensor(float(loss))
    check_close(loss.reshape(()) if isinstance(loss, torch.Tensor) else loss, expected_loss,
                what="the returned loss", hints=[(expected_loss / 8, "return the loss summed over d_in")])


def check_prediction_floor(guess, zero_ablated: float, vocab_size: int) -> bool | None:
    """Predict the loss with layer 15 zero-ablated: (a) a little above the clean loss (~4 nats), (b) about the
    uniform guess ln(vocab) ~ 10.8 nats, (c) well above uniform guessing."""
    uniform = math.log(vocab_size)
    answer = "a" if zero_ablated < 0.6 * uniform else "b" if zero_ablated < 1.15 * uniform else "c"
    return checking.explain_prediction(
        "the zero-ablation floor", guess, f"{zero_ablated:.1f} nats (uniform guessing: {uniform:.1f})",
        correct=checking.letter_of(guess) == answer,
        explanation=f"The answer is ({answer}). The later blocks, fed a zero vector, do not fall back to "
                    "uncertainty: they confidently predict the wrong tokens.")


def check_prediction_fvu(guess, fvu: float) -> bool | None:
    """Predict your SAE's held-out FVU (a number between 0 and 1)."""
    return checking.explain_prediction(
        "your SAE's FVU", guess, f"{fvu:.3f}", correct=checking.guess_within(guess, fvu, 0.1),
        explanation="32 latents per token out of a few thousand leave a sizeable part of the variance; within "
                    "0.1 counts as right. Whether that part matters is what CE loss recovered asks next.")
