"""Checkers for lesson 03 (sparse autoencoders): encoder/decoder, the loss, L0 and FVU, TopK."""

from __future__ import annotations

import torch

from saelab.exercises.checking import ExerciseError, check_close, checker, run_learner_function


def _weights(seed: int = 0, d_in: int = 6, d_sae: int = 12, batch: int = 32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, d_in, generator=g) + 0.5
    W_enc = torch.randn(d_in, d_sae, generator=g) * 0.5
    b_enc = torch.randn(d_sae, generator=g) * 0.2
    W_dec = torch.randn(d_sae, d_in, generator=g) * 0.5
    b_dec = torch.randn(d_in, generator=g) * 0.3
    return x, W_enc, b_enc, W_dec, b_dec


def _as_pair(result, name: str):
    if not isinstance(result, tuple) or len(result) != 2:
        raise ExerciseError(f"{name} should return a pair (two values), got {type(result).__name__}")
    return result


@checker("encode_decode")
def check_encode_decode(encode_decode) -> None:
    """``encode_decode(x, W_enc, b_enc, W_dec, b_dec)`` -> (feature_acts, reconstruction)."""
    x, W_enc, b_enc, W_dec, b_dec = _weights()
    pre = (x - b_dec) @ W_enc + b_enc
    f = pre.relu()
    recon = f @ W_dec + b_dec
    actual = run_learner_function(encode_decode, x.clone(), W_enc.clone(), b_enc.clone(), W_dec.clone(),
                                  b_dec.clone(), name="encode_decode")
    f_actual, recon_actual = _as_pair(actual, "encode_decode")
    check_close(f_actual, f, what="feature activations", hints=[
        (pre, "these are the pre-activations: apply the ReLU so that latents are non-negative"),
        ((x @ W_enc + b_enc).relu(),
         "subtract b_dec from x before encoding (the decoder bias is the data's centre)"),
        (((x - b_dec) @ W_enc).relu(), "the encoder bias b_enc is missing"),
        (((x + b_dec) @ W_enc + b_enc).relu(), "subtract b_dec from x before encoding; you added it"),
    ])
    check_close(recon_actual, recon, what="reconstruction", hints=[
        (f @ W_dec, "the reconstruction needs the decoder bias: f @ W_dec + b_dec"),
        (pre @ W_dec + b_dec, "decode the feature activations (after the ReLU), not the pre-activations"),
    ])


@checker("sae_loss")
def check_sae_loss(sae_loss) -> None:
    """``sae_loss(x, feature_acts, reconstruction, W_dec, l1_coefficient)`` -> scalar loss."""
    x, W_enc, b_enc, W_dec, b_dec = _weights(1)
    f = ((x - b_dec) @ W_enc + b_enc).relu()
    recon = f @ W_dec + b_dec
    coef = 0.3
    mse = (recon - x).pow(2).sum(-1).mean()
    norms = W_dec.norm(dim=1)
    l1 = (f * norms).sum(-1).mean()
    expected = mse + coef * l1
    actual = run_learner_function(sae_loss, x, f, recon, W_dec.clone(), coef, name="sae_loss")
    if isinstance(actual, torch.Tensor) and actual.ndim != 0:
        raise ExerciseError("sae_loss should return one number (a 0-d tensor), got shape "
                            f"{tuple(actual.shape)}: average over the batch")
    check_close(actual, expected, what="sae_loss", hints=[
        (mse + coef * f.sum(-1).mean(), ("weight each latent's activation by its decoder row's norm "
                                         "||W_dec[i]||: without it the SAE can shrink f and grow W_dec to "
                                         "dodge the penalty")),
        ((recon - x).pow(2).mean() + coef * l1, ("sum the squared error over d_in (then average over rows), "
                                                 "don't average over d_in")),
        ((recon - x).pow(2).sum(-1).sum() + coef * (f * norms).sum(), "average over the batch, don't sum"),
        (mse + l1, "multiply the sparsity term by l1_coefficient"),
        (mse, "the sparsity penalty is missing: add l1_coefficient * sum_i f_i ||W_dec[i]||"),
        (mse + coef * f.pow(2).sum(-1).mean(), "the penalty is L1 (|f|, and f >= 0), not squared"),
    ])


@checker("l0_and_fvu")
def check_l0_and_fvu(l0_and_fvu) -> None:
    """``l0_and_fvu(x, reconstruction, feature_acts)`` -> (mean active latents per row, FVU)."""
    x, W_enc, b_enc, W_dec, b_dec = _weights(2)
    x = x + 3.0  # a large mean: FVU must be measured around it
    f = ((x - b_dec) @ W_enc + b_enc - 2.0).relu()
    recon = f @ W_dec * 0.05 + x.mean(0) + 0.3 * torch.randn_like(x)
    l0 = (f > 0).float().sum(-1).mean()
    sq_err = (recon - x).pow(2).sum()
    fvu = sq_err / (x - x.mean(0)).pow(2).sum()
    actual = run_learner_function(l0_and_fvu, x, recon, f, name="l0_and_fvu")
    l0_actual, fvu_actual = _as_pair(actual, "l0_and_fvu")
    l0_actual = torch.as_tensor(l0_actual, dtype=torch.float32)
    fvu_actual = torch.as_tensor(fvu_actual, dtype=torch.float32)
    check_close(l0_actual, l0, what="L0", hints=[
        ((f > 0).float().sum(),
         "L0 is the mean number of active latents per row, not the total over the batch"),
        ((f > 0).float().mean(),
         "average the count over rows only: sum over latents first, then mean over rows"),
        (f.sum(-1).mean(), "count the active latents (f > 0), don't sum their values (that is L1)"),
    ])
    check_close(fvu_actual, fvu, what="FVU", rtol=1e-3, hints=[
        (sq_err / x.pow(2).sum(), ("subtract the mean of x before measuring its variance: FVU compares with "
                                   "predicting the mean, not zero")),
        (1 - fvu, "that is the fraction of variance *explained*; FVU is the unexplained part"),
        ((recon - x).pow(2).mean() / x.var(), ("use sums over rows and dimensions (total squared error / "
                                               "total variance around the mean)")),
    ])


@checker("topk_activation")
def check_topk_activation(topk_activation) -> None:
    """``topk_activation(pre_acts, k)`` -> same shape, only each row's k largest kept (and ReLU'd), rest 0."""
    g = torch.Generator().manual_seed(3)
    pre = torch.randn(16, 10, generator=g)
    pre[0] = -torch.rand(10, generator=g) - 0.1  # a row with no positive value: ReLU must zero its winners
    k = 3
    values, idx = pre.topk(k, dim=-1)
    expected = torch.zeros_like(pre).scatter(-1, idx, values.relu())
    actual = run_learner_function(topk_activation, pre.clone(), k, name="topk_activation")
    if isinstance(actual, tuple):
        raise ExerciseError("return one dense tensor shaped like pre_acts (zeros outside the top k), "
                            "not the (values, indices) pair from torch.topk")
    small_v, small_i = pre.topk(k, dim=-1, largest=False)
    col_v, col_i = pre.topk(k, dim=0)
    check_close(actual, expected, what="topk_activation(pre_acts, k)", hints=[
        (torch.zeros_like(pre).scatter(-1, idx, values), ("apply a ReLU to the k winners: a row whose "
                                                          "largest pre-activations are negative should stay "
                                                          "all zero")),
        (torch.zeros_like(pre).scatter(-1, small_i, small_v.relu()),
         "you kept the k smallest; use largest=True"),
        (torch.zeros_like(pre).scatter(0, col_i, col_v.relu()), ("take the top k along the latent dimension "
                                                                 "(dim=-1), per row, not down the batch")),
        (pre.relu(), "only the k largest per row may stay non-zero"),
    ])


RESAMPLE_ENCODER_SCALE = 0.2
"""Towards Monosemanticity's resampling: a new encoder column is this times the live columns' mean norm."""


def reference_training_step(sae, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> float:
    """One step on the batch ``x``: forward, gradients, the update; decoder rows kept at unit norm when the
    SAE's config asks for it (``cfg.normalize_decoder``, TopK). Returns the loss as a float."""
    out = sae(x)
    optimizer.zero_grad()
    out.loss.backward()
    if sae.cfg.normalize_decoder:
        sae.remove_parallel_decoder_grad_()
    optimizer.step()
    if sae.cfg.normalize_decoder:
        sae.normalize_decoder_()
    return out.loss.item()


def reference_train_loop(sae, acts: torch.Tensor, steps: int, batch_size: int, lr: float, training_step,
                         seed: int = 0) -> list[float]:
    """``steps`` calls of ``training_step`` with one Adam optimiser, on batches of a fresh shuffle of ``acts``
    each epoch; returns the loss of every step."""
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    order, position, losses = torch.randperm(len(acts), generator=generator), 0, []
    for _ in range(steps):
        if position + batch_size > len(acts):  # a new epoch: a new shuffle
            order, position = torch.randperm(len(acts), generator=generator), 0
        losses.append(training_step(sae, optimizer, acts[order[position:position + batch_size]]))
        position += batch_size
    return losses


def reference_dead_latents(feature_acts: torch.Tensor) -> torch.Tensor:
    """(rows, d_sae) codes -> (d_sae,) bools: True for a latent that fired (> 0) on none of the rows."""
    return ~(feature_acts > 0).any(dim=0)


def reference_resample_dead(W_enc, b_enc, W_dec, b_dec, dead, x, reconstruction):
    """Restart the dead latents on the inputs the SAE reconstructs worst; returns new (W_enc, b_enc, W_dec).

    Towards Monosemanticity, simplified: the paper draws inputs with probability proportional to the square of
    their loss; here the ``dead.sum()`` worst inputs are taken outright, the worst for the first dead latent.
    Each dead latent's decoder row becomes the unit vector of its input minus ``b_dec``; its encoder column
    the same direction at 0.2 times the live encoder columns' mean norm; its encoder bias 0. (The trainer
    also clears Adam's running averages for those latents.)
    """
    dead_idx = dead.nonzero().squeeze(1)
    W_enc, b_enc, W_dec = W_enc.clone(), b_enc.clone(), W_dec.clone()
    if dead_idx.numel() == 0:
        return W_enc, b_enc, W_dec
    error = (x - reconstruction).pow(2).sum(-1)
    worst = error.topk(dead_idx.numel()).indices
    direction = x[worst] - b_dec
    direction = direction / direction.norm(dim=1, keepdim=True)
    encoder_norm = W_enc[:, ~dead].norm(dim=0).mean()
    W_dec[dead_idx] = direction
    W_enc[:, dead_idx] = direction.t() * RESAMPLE_ENCODER_SCALE * encoder_norm
    b_enc[dead_idx] = 0.0
    return W_enc, b_enc, W_dec


def reference_mmcs(W_dec: torch.Tensor, true_directions: torch.Tensor) -> torch.Tensor:
    """Mean over the true features of the best cosine any decoder row reaches with it."""
    dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    true = true_directions / true_directions.norm(dim=1, keepdim=True)
    return (true @ dec.t()).max(dim=1).values.mean()


def reference_oracle_readout(acts: torch.Tensor, W: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Read each *active* feature along its own direction, strength (W_f · h) / ||W_f||², decode through W.

    acts (rows, d_hidden), W (d_hidden, feat), support (rows, feat) bools -> reconstruction (rows, d_hidden).
    """
    strengths = acts @ (W / W.norm(dim=0).pow(2)) * support
    return strengths @ W.t()


def _small_topk_sae(seed: int = 0):
    from saelab.sae import SAE, SAEConfig

    sae = SAE(SAEConfig(d_in=6, d_sae=16, architecture="topk", k=3, aux_k_coefficient=0.0), seed=seed)
    g = torch.Generator().manual_seed(seed + 10)
    with torch.no_grad():
        sae.W_enc.add_(0.3 * torch.randn(sae.W_enc.shape, generator=g))
        sae.b_dec.copy_(0.2 * torch.randn(6, generator=g))
    return sae


def _after_step(sae, x, lr, *, stale=None, zero_grad=True, step=True, remove_parallel=True, renormalise=True,
                renormalise_first=False):
    """The SAE's parameters after one SGD step written with (or without) each ingredient."""
    import copy

    sae = copy.deepcopy(sae)
    for p, s in zip(sae.parameters(), stale):
        p.grad = None if zero_grad else s.clone()
    out = sae(x)
    out.loss.backward()
    if remove_parallel:
        sae.remove_parallel_decoder_grad_()
    if renormalise_first:
        sae.normalize_decoder_()
    if step:
        with torch.no_grad():
            for p in sae.parameters():
                p.sub_(lr * p.grad)
    if renormalise and not renormalise_first:
        sae.normalize_decoder_()
    return {name: p.detach() for name, p in sae.named_parameters()}


@checker("training_step")
def check_training_step(training_step) -> None:
    """``training_step(sae, optimizer, x)`` on a TopK SAE -> the loss (a float); parameters updated."""
    import copy

    sae = _small_topk_sae()
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(11)) + 0.5
    lr = 0.3
    # Gradients left over from an earlier step (laid out like their parameters, as autograd lays them out).
    stale = [torch.empty_like(p).copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(20 + i)))
             for i, p in enumerate(sae.parameters())]
    expected = _after_step(sae, x, lr, stale=stale)
    learner_sae = copy.deepcopy(sae)
    for p, s in zip(learner_sae.parameters(), stale):
        p.grad = s.clone()  # left over from an earlier step
    # Plain SGD, so that every ingredient of the step shows in the new weights.
    optimizer = torch.optim.SGD(learner_sae.parameters(), lr=lr)
    result = run_learner_function(training_step, learner_sae, optimizer, x.clone(), name="training_step")
    actual = dict(learner_sae.named_parameters())
    row_norms = actual["W_dec"].detach().norm(dim=1)
    hints = [(_after_step(sae, x, lr, stale=stale, **mistake)["W_dec"], hint) for mistake, hint in [
        ({"step": False}, "the weights did not move: call optimizer.step() after loss.backward()"),
        ({"zero_grad": False}, ("the step used gradients left over from before: call optimizer.zero_grad() "
                                "before backward(), or they add up from step to step")),
        ({"renormalise_first": True}, ("renormalise the decoder rows *after* optimizer.step(): the step "
                                       "moves them off unit norm")),
        ({"remove_parallel": False}, ("before optimizer.step(), call sae.remove_parallel_decoder_grad_(): "
                                      "the part of the gradient along each decoder row only changes its "
                                      "norm, which the renormalisation undoes, and it would bend the row's "
                                      "direction")),
    ]]
    W_dec_after = actual["W_dec"].detach()
    if not torch.allclose(W_dec_after, expected["W_dec"], atol=1e-5):
        for mistake, hint in hints:
            if torch.allclose(W_dec_after, mistake, atol=1e-5):
                raise ExerciseError(f"training_step is not right: {hint}")
        if not torch.allclose(row_norms, torch.ones_like(row_norms), atol=1e-4):
            raise ExerciseError("the decoder rows are no longer unit norm: call sae.normalize_decoder_() "
                                "after optimizer.step() (this SAE keeps them at norm 1, "
                                "cfg.normalize_decoder)")
    check_close(W_dec_after, expected["W_dec"], what="W_dec after your step", atol=1e-5)
    for name in ("W_enc", "b_enc", "b_dec"):
        check_close(actual[name], expected[name], what=f"{name} after your step", atol=1e-5)
    if isinstance(result, torch.Tensor) and result.requires_grad:
        raise ExerciseError("return the loss as a number (out.loss.item()), not the tensor: a list of "
                            "tensors that keep their graph holds every step's graph in memory")
    with torch.no_grad():
        loss = sae(x).loss.item()
    number = isinstance(result, (int, float)) or (isinstance(result, torch.Tensor) and result.numel() == 1)
    if not number or abs(float(result) - loss) > 1e-4 * (1 + abs(loss)):
        raise ExerciseError(f"training_step should return the batch's loss before the step ({loss:.4f}), got "
                            f"{result!r}")


def _loop_data():
    g = torch.Generator().manual_seed(12)
    directions = torch.randn(16, 6, generator=g)
    directions /= directions.norm(dim=1, keepdim=True)
    codes = torch.rand(600, 16, generator=g) * (torch.rand(600, 16, generator=g) < 0.15)
    return codes @ directions + 0.01 * torch.randn(600, 6, generator=g)  # no two rows alike


@checker("train_loop")
def check_train_loop(train_loop) -> None:
    """``train_loop(sae, acts, steps, batch_size, lr, training_step)`` -> the loss of every step."""
    acts = _loop_data()
    row_of = {row.numpy().tobytes(): i for i, row in enumerate(acts)}
    sae = _small_topk_sae(1)
    steps, batch_size, lr = 25, 50, 3e-3
    calls = []

    def step_spy(sae, optimizer, x):  # the names the lesson gives training_step's arguments
        if not isinstance(x, torch.Tensor) or x.ndim != 2:
            raise ExerciseError(f"training_step received {type(x).__name__} {getattr(x, 'shape', '')}; pass "
                                "it a (batch_size, d_in) batch of rows of acts")
        calls.append((sae, optimizer, [row_of.get(row.numpy().tobytes(), -1) for row in x]))
        return reference_training_step(sae, optimizer, x)

    losses = run_learner_function(train_loop, sae, acts, steps, batch_size, lr, step_spy, name="train_loop")
    if len(calls) != steps:
        raise ExerciseError(f"train_loop called training_step {len(calls)} times; it should take `steps` = "
                            f"{steps} steps")
    if any(s is not sae for s, _, _ in calls):
        raise ExerciseError("pass training_step the SAE you were given (the one to train), not a new one")
    optimizers = {id(opt) for _, opt, _ in calls}
    if len(optimizers) > 1:
        raise ExerciseError("a new optimiser every step: create Adam once, before the loop. A fresh Adam "
                            "forgets the running averages of the gradient that set its step sizes")
    optimizer = calls[0][1]
    if not isinstance(optimizer, torch.optim.Adam):
        raise ExerciseError(f"use torch.optim.Adam (the optimiser SAEs are trained with), got "
                            f"{type(optimizer).__name__}")
    if optimizer.param_groups[0]["lr"] != lr:
        raise ExerciseError(f"the optimiser's learning rate is {optimizer.param_groups[0]['lr']}, not "
                            f"lr={lr}: pass lr to torch.optim.Adam")
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if optimised != {id(p) for p in sae.parameters()}:
        raise ExerciseError("the optimiser should update the SAE's parameters: "
                            "torch.optim.Adam(sae.parameters(), ...)")
    rows = [r for _, _, r in calls]
    if any(-1 in r for r in rows):
        raise ExerciseError("a batch held rows that are not rows of acts: take batches of rows, "
                            "acts[indices]")
    if any(len(r) != batch_size for r in rows):
        sizes = sorted({len(r) for r in rows})
        raise ExerciseError(f"batches have {sizes} rows; each should have batch_size = {batch_size}")
    if all(r == rows[0] for r in rows):
        raise ExerciseError("every step trained on the same batch: move on through the data (a new slice of "
                            "a shuffled order each step)")
    in_order = [list(range(i * batch_size, (i + 1) * batch_size)) for i in range(len(acts) // batch_size)]
    if rows[:2] == in_order[:2]:
        raise ExerciseError("the batches walk through acts in its stored order: shuffle the rows each epoch "
                            "(torch.randperm). Harvested activations come in sequence order, neighbours "
                            "alike")
    first_epoch = [i for r in rows[: len(acts) // batch_size] for i in r]
    if len(set(first_epoch)) < 0.9 * len(first_epoch):
        raise ExerciseError("the first pass over the data repeats many rows and skips others: walk through "
                            "one permutation of the rows per epoch (torch.randperm), batch by batch")
    if not isinstance(losses, (list, tuple)) or len(losses) != steps:
        got = type(losses).__name__ + (f" of length {len(losses)}" if hasattr(losses, "__len__") else "")
        raise ExerciseError(f"train_loop should return the list of the {steps} losses training_step "
                            f"returned, got {got}")


@checker("dead_latents")
def check_dead_latents(dead_latents) -> None:
    """``dead_latents(feature_acts)``, (rows, d_sae) -> (d_sae,) bools, True where the latent never fired."""
    g = torch.Generator().manual_seed(13)
    f = torch.rand(50, 12, generator=g) * (torch.rand(50, 12, generator=g) < 0.3)
    f[:, [2, 7, 9]] = 0.0      # dead
    f[:, 4] = 0.0
    f[17, 4] = 0.2             # fired once: alive
    f[:, 5] = 0.3              # fires on every row: alive (and dense)
    expected = reference_dead_latents(f)
    actual = run_learner_function(dead_latents, f.clone(), name="dead_latents")
    if isinstance(actual, torch.Tensor) and actual.shape == (f.shape[0],):
        raise ExerciseError("you returned one value per row; return one per latent, shape (d_sae,): reduce "
                            "over the rows (dim=0)")
    if not isinstance(actual, torch.Tensor):
        raise ExerciseError(f"dead_latents should return a tensor of bools, got {type(actual).__name__}")
    if actual.shape != expected.shape:
        raise ExerciseError(f"dead_latents should return shape {tuple(expected.shape)}, got "
                            f"{tuple(actual.shape)}")
    actual = actual.bool()
    if torch.equal(actual, expected):
        return
    for mistake, hint in [
        (~expected, "you marked the live latents: a dead latent is one that did *not* fire"),
        (~(f > 0).all(0),
         "a latent is alive if it fired on *any* row (.any(dim=0)); you asked for every row"),
        (~(f >= 0).any(0), "f >= 0 holds for every latent (a ReLU gives 0, not less): count f > 0 as firing"),
        (f.mean(0) < 0.01, ("a latent that fired once is alive: test whether it ever fired (f > "
                            "0).any(dim=0), not whether its mean is small")),
    ]:
        if torch.equal(actual, mistake):
            raise ExerciseError(f"dead_latents is not right: {hint}")
    marked, dead = actual.nonzero().flatten().tolist(), expected.nonzero().flatten().tolist()
    raise ExerciseError(f"dead_latents marked latents {marked} as dead; the dead ones are {dead}")


def _resample_case():
    g = torch.Generator().manual_seed(14)
    d_in, d_sae, rows = 5, 10, 30
    W_enc = torch.randn(d_in, d_sae, generator=g) * 0.7
    b_enc = torch.randn(d_sae, generator=g) * 0.2 - 0.3
    W_dec = torch.randn(d_sae, d_in, generator=g)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    b_dec = torch.randn(d_in, generator=g) * 0.5
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[[1, 4, 8]] = True
    x = torch.randn(rows, d_in, generator=g) + 1.0
    noise_scale = torch.linspace(0.05, 1.0, rows)[torch.randperm(rows, generator=g)]  # errors of every size
    reconstruction = x + torch.randn(rows, d_in, generator=g) * noise_scale[:, None]
    return W_enc, b_enc, W_dec, b_dec, dead, x, reconstruction


def _as_set_of_rows(rows: torch.Tensor) -> torch.Tensor:
    return rows[torch.argsort(rows[:, 0])]


@checker("resample_dead")
def check_resample_dead(resample_dead) -> None:
    """``resample_dead(W_enc, b_enc, W_dec, b_dec, dead, x, reconstruction)`` -> new (W_enc, b_enc, W_dec)."""
    W_enc, b_enc, W_dec, b_dec, dead, x, recon = _resample_case()
    exp_enc, exp_benc, exp_dec = reference_resample_dead(W_enc, b_enc, W_dec, b_dec, dead, x, recon)
    result = run_learner_function(resample_dead, W_enc.clone(), b_enc.clone(), W_dec.clone(), b_dec.clone(),
                                  dead.clone(), x.clone(), recon.clone(), name="resample_dead")
    if not isinstance(result, tuple) or len(result) != 3:
        raise ExerciseError("resample_dead should return three tensors: (W_enc, b_enc, W_dec)")
    act_enc, act_benc, act_dec = (torch.as_tensor(t).detach() for t in result)
    names = ("W_enc", "b_enc", "W_dec")
    for name, got, want in zip(names, (act_enc, act_benc, act_dec), (exp_enc, exp_benc, exp_dec)):
        if got.shape != want.shape:
            raise ExerciseError(f"the {name} you returned has shape {tuple(got.shape)}, expected "
                                f"{tuple(want.shape)}")
    alive = ~dead
    pairs = ((act_dec[alive], W_dec[alive]), (act_enc[:, alive], W_enc[:, alive]),
             (act_benc[alive], b_enc[alive]))
    if not all(torch.allclose(a, b) for a, b in pairs):
        raise ExerciseError("live latents changed: resample only the dead ones (index with the dead mask)")
    n = int(dead.sum())
    error = (x - recon).pow(2).sum(-1)
    # The new decoder rows, compared as a set: which bad input goes to which dead latent is free.
    new_rows = _as_set_of_rows(act_dec[dead])

    def unit(v):
        return v / v.norm(dim=1, keepdim=True)

    worst, best = error.topk(n).indices, error.topk(n, largest=False).indices
    for rows, hint in [
        (unit(x[best] - b_dec), ("these are the inputs the SAE reconstructs *best*: restart dead latents on "
                                 "the worst ones (largest squared error), the ones no live latent explains")),
        (x[worst] - b_dec, "normalise each new decoder row to unit length"),
        (unit(x[worst]), "point the new decoder row at x - b_dec, the input seen from the SAE's centre"),
        (unit(x[(x - recon).sum(-1).abs().topk(n).indices] - b_dec),
         "measure each input's error as its squared error summed over d_in, ||x - x_hat||²"),
    ]:
        if torch.allclose(new_rows, _as_set_of_rows(rows), atol=1e-5) and not torch.allclose(
                new_rows, _as_set_of_rows(exp_dec[dead]), atol=1e-5):
            raise ExerciseError(f"resample_dead is not right: {hint}")
    if not torch.allclose(new_rows, _as_set_of_rows(exp_dec[dead]), atol=1e-5):
        raise ExerciseError("the dead latents' new decoder rows should be the unit vectors of x - b_dec for "
                            f"the {n} inputs with the largest squared error ||x - x_hat||², one input per "
                            "dead latent")
    if not torch.allclose(act_benc[dead], torch.zeros(n)):
        raise ExerciseError("reset the dead latents' encoder bias to 0: a negative b_enc is often what kept "
                            "them from firing")
    dead_idx = dead.nonzero().squeeze(1)
    enc_cols, dec_rows = act_enc[:, dead_idx].t(), act_dec[dead_idx]
    live_norm = W_enc[:, alive].norm(dim=0).mean()
    if torch.allclose(enc_cols, dec_rows, atol=1e-5):
        raise ExerciseError(f"scale the new encoder columns to {RESAMPLE_ENCODER_SCALE} × the live encoder "
                            "columns' mean norm: at full length a resampled latent would fire on far too "
                            "much")
    if torch.allclose(enc_cols, dec_rows * RESAMPLE_ENCODER_SCALE, atol=1e-5):
        raise ExerciseError(f"scale the new encoder columns to {RESAMPLE_ENCODER_SCALE} × the *live encoder "
                            "columns' mean norm*, not to 0.2 alone")
    expected_cols = dec_rows * RESAMPLE_ENCODER_SCALE * live_norm
    check_close(enc_cols, expected_cols, what="the new encoder columns", hints=[
        (dec_rows * RESAMPLE_ENCODER_SCALE * W_enc.norm(dim=0).mean(),
         "take the mean norm over the *live* encoder columns only (the dead ones are being replaced)"),
    ])


@checker("mmcs")
def check_mmcs(mmcs) -> None:
    """``mmcs(W_dec, true_directions)`` -> mean over true features of their best cosine with a decoder row."""
    g = torch.Generator().manual_seed(15)
    true = torch.randn(6, 8, generator=g) * torch.linspace(0.5, 2.0, 6)[:, None]
    W_dec = torch.randn(14, 8, generator=g) * torch.linspace(0.3, 3.0, 14)[:, None]
    W_dec[3] = 2.5 * true[0] + 0.1 * torch.randn(8, generator=g)
    W_dec[9] = -1.5 * true[2]            # the opposite way: its signed cosine is -1, not a match
    expected = reference_mmcs(W_dec, true)
    actual = run_learner_function(mmcs, W_dec.clone(), true.clone(), name="mmcs")
    actual = torch.as_tensor(actual, dtype=torch.float32) if isinstance(actual, (int, float)) else actual
    if isinstance(actual, torch.Tensor) and actual.ndim != 0:
        raise ExerciseError(f"mmcs should return one number, got shape {tuple(actual.shape)}: average the "
                            "best cosines over the true features")
    dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    unit_true = true / true.norm(dim=1, keepdim=True)
    cos = unit_true @ dec.t()
    check_close(actual, expected, what="mmcs", hints=[
        ((true @ W_dec.t()).max(1).values.mean(), ("normalise both sets of vectors: a cosine is the dot "
                                                   "product of unit vectors")),
        ((unit_true @ W_dec.t()).max(1).values.mean(), "normalise the decoder rows too"),
        ((true @ dec.t()).max(1).values.mean(), "normalise the true directions too"),
        (cos.max(0).values.mean(), ("for each *true feature* take its best latent (max over latents, dim=1), "
                                    "then average over the true features; you took each latent's best "
                                    "feature")),
        (cos.abs().max(1).values.mean(), ("use the signed cosine: a decoder row pointing the opposite way "
                                          "does not represent the feature (latents are >= 0, so it can only "
                                          "subtract it)")),
        (cos.mean(), "take each true feature's *best* cosine (the max over latents) before averaging"),
    ])


@checker("oracle_readout")
def check_oracle_readout(oracle_readout) -> None:
    """``oracle_readout(acts, W, support)`` -> (rows, d_hidden): each active feature read, then decoded."""
    g = torch.Generator().manual_seed(16)
    W = torch.randn(4, 9, generator=g) * torch.linspace(0.5, 1.5, 9)
    codes = torch.rand(20, 9, generator=g) * (torch.rand(20, 9, generator=g) < 0.3)
    support = codes > 0
    acts = codes @ W.t()
    expected = reference_oracle_readout(acts, W, support)
    actual = run_learner_function(oracle_readout, acts.clone(), W.clone(), support.clone(),
                                  name="oracle_readout")
    if isinstance(actual, torch.Tensor) and actual.shape == support.shape:
        raise ExerciseError("these are the feature strengths, (rows, feat); decode them through the "
                            "directions (strengths @ W.T) to get the reconstruction, (rows, d_hidden)")
    norms = W.norm(dim=0)
    check_close(actual, expected, what="oracle_readout(acts, W, support)", hints=[
        ((acts @ W * support) @ W.t(), ("divide each read strength by ||W_f||²: W_f · h is the strength "
                                        "times ||W_f||² (for h = strength × W_f)")),
        ((acts @ (W / norms) * support) @ W.t(), "divide by the squared norm ||W_f||², not ||W_f||"),
        ((acts @ (W / norms.pow(2))) @ W.t(), ("read only the active features (multiply by support): reading "
                                               "all of them along their directions adds every feature's "
                                               "interference")),
    ])


def check_recovered_prediction(prediction, recovered: int, n_true: int) -> bool | None:
    """Lesson 03, section 3: how many true features the ReLU SAE finds with cosine > 0.9."""
    from saelab.exercises.lesson01 import check_prediction

    return check_prediction("features found", prediction, recovered,
                            f"{recovered} of {n_true}: the data is a sparse sum of fixed directions, and an "
                            "SAE with more latents than features, pushed to use few at a time, finds the "
                            "directions that explain it with the fewest active latents — the features "
                            "themselves.",
                            tolerance=max(3, n_true // 10))


ORACLE_CHOICES = {"a": "0, a perfect reconstruction", "b": "about L0 / d, around 0.1", "c": "about 0.5"}


def check_oracle_prediction(prediction, oracle_fvu: float, true_l0: float, d: int) -> bool | None:
    """Lesson 03, section 5: the FVU of reading the true features along their true directions."""
    from saelab.exercises.lesson01 import check_prediction

    answer = min(ORACLE_CHOICES, key=lambda k: abs(oracle_fvu - {"a": 0.0, "b": true_l0 / d, "c": 0.5}[k]))
    return check_prediction("the oracle read-out's FVU", prediction, answer,
                            f"FVU {oracle_fvu:.3f} (L0 / d = {true_l0 / d:.3f}). Knowing the directions and "
                            "which features are on is not enough: reading each along its own direction also "
                            "picks up the other active features' overlap with it.", choices=ORACLE_CHOICES)


DEAD_CHOICES = {"a": "none", "b": "some, under a third", "c": "most"}


def check_dead_prediction(prediction, dead_fraction: float) -> bool | None:
    """Lesson 03, section 6: how many latents die in a TopK SAE without AuxK, one latent per feature."""
    from saelab.exercises.lesson01 import check_prediction

    answer = "a" if dead_fraction == 0 else ("b" if dead_fraction < 1 / 3 else "c")
    return check_prediction("dead latents without AuxK", prediction, answer,
                            f"{dead_fraction:.0%} dead. A latent that loses the top-k race early gets no "
                            "gradient, so nothing brings it back; with one latent per feature each dead one "
                            "is a feature missed.",
                            choices=DEAD_CHOICES)
