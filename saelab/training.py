"""``train_sae``: train an SAE on activations held in memory or streamed as batches.

The recipe (Anthropic's April 2024 update for ReLU SAEs, Gao et al. 2024 for TopK, Rajamanoharan et al. 2024
for JumpReLU): Adam; learning rate warmed up linearly, then held, then decayed linearly to zero over the last
part of training; the sparsity penalty warmed up from zero; ``b_dec`` started at the geometric median of a sample;
inputs scaled to unit mean squared norm (the scale is folded back into the weights at the end, so the returned
SAE reads raw activations); dead latents resampled (ReLU) or revived by AuxK (TopK).

NaN or inf in a batch is an error naming the batch (we do not silently skip rows). The activation tensor is
never copied: each step gathers one batch from it.

The SAE trains on one device (the activations' for a tensor, else the SAE's own) and everything the trainer
makes lives there, so a GPU run never waits on the host; ``autocast_dtype=torch.bfloat16`` runs the matrix
products in bf16 while the weights and Adam's state stay fp32. Inside a torch.distributed process group (see
:mod:`saelab.distributed`) each process encodes its share of every batch and the gradients are averaged, so
the weights equal a one-process run on the same global batches.
Shape letters: B batch, D d_in, F d_sae.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saelab import distributed
from saelab.sae import SAE
from saelab.threads import set_torch_threads


@dataclass
class TrainHistory:
    """What happened during training, one entry per logged step (plot any list against ``step``)."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    sparsity_loss: list[float] = field(default_factory=list)
    aux_loss: list[float] = field(default_factory=list)
    l0: list[float] = field(default_factory=list)
    """Mean active latents per row in the logged batch."""
    fvu: list[float] = field(default_factory=list)
    """Fraction of variance unexplained on the logged batch."""
    dead_fraction: list[float] = field(default_factory=list)
    """Fraction of latents that have not fired for ``dead_after_rows`` rows."""
    lr: list[float] = field(default_factory=list)
    resampled: list[tuple[int, int]] = field(default_factory=list)
    """(step, number of latents resampled) for each resampling that happened."""
    scale_factor: float = 1.0
    """Inputs were multiplied by this while training (folded into the weights afterwards)."""
    steps: int = 0
    rows: int = 0
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def geometric_median(points: Tensor, iterations: int = 30, eps: float = 1e-5) -> Tensor:
    """Weiszfeld's algorithm: the point minimising the summed distance to ``points`` (robust to outliers)."""
    guess = points.mean(0)
    for _ in range(iterations):
        weights = 1.0 / (points - guess).norm(dim=1).clamp_min(eps)
        new = (weights[:, None] * points).sum(0) / weights.sum()
        if (new - guess).norm() < eps * (1 + guess.norm()):
            return new
        guess = new
    return guess


def lr_factor(step: int, steps: int, warmup_steps: int, decay_fraction: float) -> float:
    """Linear warm-up, constant, then linear decay to 0 over the last ``decay_fraction`` of training."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = int(steps * decay_fraction)
    if decay_steps and step >= steps - decay_steps:
        return max(steps - step, 0) / decay_steps
    return 1.0


def _positive_int(name: str, value, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _fraction(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def _tensor_batches(acts: Tensor, batch_size: int, steps: int, gen: torch.Generator) -> Iterator[Tensor]:
    """Shuffled batches, epoch after epoch; under torch.distributed, this rank's equal share of each batch."""
    n = acts.shape[0]
    batch_size = min(batch_size, n)
    per_epoch = n // batch_size
    mine = distributed.share(distributed.check_divisible(batch_size) * distributed.world_size())
    done = 0
    while done < steps:
        # Every rank draws the same permutation (same seed), so the global batches are a one-process run's.
        perm = torch.randperm(n, generator=gen, device=gen.device)
        for i in range(per_epoch):
            if done == steps:
                return
            # Gathering one batch is the only copy: the activation tensor itself is never duplicated.
            yield acts[perm[i * batch_size:(i + 1) * batch_size][mine]]
            done += 1


def _sample(activations: Tensor | Iterable[Tensor], n: int, gen: torch.Generator) -> Tensor:
    if isinstance(activations, Tensor):
        idx = torch.randperm(activations.shape[0], generator=gen, device=gen.device)[:n]
        return activations[idx].float()
    raise TypeError("a sample can only be drawn from a tensor")


@torch.no_grad()
def _resample_dead(sae: SAE, opt: torch.optim.Optimizer, dead_F: Tensor, x_BD: Tensor, recon_BD: Tensor,
                   gen: torch.Generator) -> int:
    """Towards Monosemanticity's resampling: dead latents restart on inputs the SAE reconstructs worst."""
    dead_idx = dead_F.nonzero().squeeze(1)
    n_dead = dead_idx.numel()
    if n_dead == 0:
        return 0
    err_B = (recon_BD - x_BD).pow(2).sum(-1)
    weights = err_B.pow(2)
    if float(weights.sum()) <= 0:
        return 0
    picks = torch.multinomial(weights, n_dead, replacement=n_dead > x_BD.shape[0], generator=gen)
    v_ND = x_BD[picks] - (sae.b_dec if sae.cfg.apply_b_dec_to_input else 0)
    v_ND = v_ND / v_ND.norm(dim=1, keepdim=True).clamp_min(1e-12)
    alive = ~dead_F
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else 1.0
    dec_norm = sae.W_dec[alive].norm(dim=1).mean() if alive.any() else 1.0
    sae.W_dec[dead_idx] = v_ND * (1.0 if sae.cfg.normalize_decoder else dec_norm)
    sae.W_enc[:, dead_idx] = v_ND.t() * enc_norm * 0.2
    sae.b_enc[dead_idx] = 0.0
    # Adam's moments for the new rows/columns would drag them back toward the dead solution: zero them.
    for param, index, dim in ((sae.W_dec, dead_idx, 0), (sae.W_enc, dead_idx, 1), (sae.b_enc, dead_idx, 0)):
        state = opt.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key].index_fill_(dim, index, 0.0)
    return n_dead


def train_sae(
    sae: SAE,
    activations: Tensor | Iterable[Tensor],
    *,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 4096,
    lr: float = 1e-3,
    warmup_steps: int | None = None,
    decay_fraction: float = 0.2,
    sparsity_warmup_fraction: float = 0.05,
    b_dec_init: str = "geometric_median",
    normalize: bool = True,
    dead_after_rows: int | None = None,
    resample_at: Sequence[float] | None = None,
    max_grad_norm: float | None = None,
    log_every: int | None = None,
    seed: int = 0,
    progress: bool = True,
    num_threads: int | None = None,
    device: str | torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> TrainHistory:
    """Train ``sae`` in place on ``activations``; return the history.

    activations: a (rows, d_in) tensor (any float dtype; batches are gathered from it, never a full copy)
        or any iterable of (batch, d_in) tensors (then ``steps`` or ``len()`` must bound the run).
    steps / epochs: how long (default one epoch of a tensor). batch_size: rows per step (tensor input; under
        torch.distributed the global batch, split evenly over the processes, which all pass the same tensor).
        An iterable under torch.distributed yields this process's own batches, the same number on every rank.
    lr, warmup_steps (default 1% of steps), decay_fraction: the learning-rate schedule.
    sparsity_warmup_fraction: the L1 / L0 penalty ramps from 0 to its full weight over this fraction.
    b_dec_init: ``geometric_median``, ``mean`` or ``none`` (from a sample of up to 4096 rows).
    normalize: scale inputs to unit mean squared norm while training; folded into the weights afterwards.
    dead_after_rows: a latent is dead once it has not fired for this many rows (AuxK / resampling / history).
    log_every: steps between history entries (default: ~100 entries, at least 10 steps apart; the last step is
        always logged).
    resample_at: fractions of training at which dead ReLU latents are resampled (default 0.25 and 0.5 for relu).
    num_threads: torch threads while training (restored afterwards). Default: 1 for small SAEs
        (d_in * d_sae < 2**20), whose many short kernels lose more to thread hand-offs than they gain,
        ten-fold on a busy machine; otherwise torch's current setting.
    device: where to train (the SAE is moved there). Default: the activations' device for a tensor, else the
        SAE's. Batches from elsewhere (e.g. a store on disk) are moved to it.
    autocast_dtype: ``torch.bfloat16`` runs the forward's matrix products under autocast (fp32 weights,
        Adam state and loss); None trains in fp32.
    """
    if not isinstance(sae, SAE):
        raise TypeError(f"sae must be a saelab.sae.SAE, got {type(sae).__name__}")
    cfg = sae.cfg
    _positive_int("batch_size", batch_size)
    _positive_int("steps", steps, allow_none=True)
    _positive_int("epochs", epochs, allow_none=True)
    _positive_int("warmup_steps", warmup_steps, allow_none=True)
    _positive_int("dead_after_rows", dead_after_rows, allow_none=True)
    _positive_int("log_every", log_every, allow_none=True)
    _positive_int("num_threads", num_threads, allow_none=True)
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    _fraction("decay_fraction", decay_fraction)
    _fraction("sparsity_warmup_fraction", sparsity_warmup_fraction)
    if b_dec_init not in ("geometric_median", "mean", "none"):
        raise ValueError(f"b_dec_init must be 'geometric_median', 'mean' or 'none', got {b_dec_init!r}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
    if autocast_dtype not in (None, torch.bfloat16):
        raise ValueError(f"autocast_dtype must be None or torch.bfloat16 (float16 would need loss scaling), "
                         f"got {autocast_dtype!r}")
    _record_provenance(sae, activations)
    if device is None:
        device = activations.device if isinstance(activations, Tensor) else sae.W_enc.device
    device = torch.device(device)
    sae.to(device)
    world = distributed.world_size()

    # Batch order is drawn where the data lives; resampling draws where the SAE lives (one generator on CPU).
    data_device = activations.device if isinstance(activations, Tensor) else torch.device("cpu")
    gen = torch.Generator(device=data_device).manual_seed(seed)
    sae_gen = gen if data_device == device else torch.Generator(device=device).manual_seed(seed)
    if isinstance(activations, Tensor):
        if activations.ndim != 2 or activations.shape[1] != cfg.d_in:
            raise ValueError(f"activations have shape {tuple(activations.shape)}, expected (rows, d_in={cfg.d_in})")
        if activations.shape[0] == 0:
            raise ValueError("activations is empty")
        if not activations.is_floating_point():
            raise ValueError(f"activations must be floating point, got {activations.dtype}")
        distributed.check_divisible(min(batch_size, activations.shape[0]))
        per_epoch = max(activations.shape[0] // batch_size, 1)
        if steps is None:
            steps = per_epoch * (epochs or 1)
        sample = _sample(activations, 4096, gen)
        batches: Iterator[Tensor] = _tensor_batches(activations, batch_size, steps, gen)
    else:
        if epochs is not None:
            raise ValueError("epochs only applies to a tensor; give steps for an iterable of batches")
        if steps is None:
            if not hasattr(activations, "__len__"):
                raise ValueError("steps is required when activations is an iterator without len()")
            steps = len(activations)
        batches = iter(activations)
        first = next(batches, None)
        if first is None:
            raise ValueError("activations yielded no batches")
        sample = first.to(device, torch.float32)
        batches = _chain(first, batches)
    _check_batch(sample, cfg.d_in, "sample")
    distributed.check_same("steps", steps)
    sample = sample.to(device)

    scale = 1.0
    if normalize:
        mean_sq = float(distributed.mean_over_ranks(sample.pow(2).sum(-1).mean()))
        if mean_sq <= 0:
            raise ValueError("activations are all zero; cannot normalise them (pass normalize=False)")
        scale = 1.0 / math.sqrt(mean_sq)
    with torch.no_grad():
        if b_dec_init != "none":
            sample_scaled = sample * scale
            # 1024 rows place the median well enough for a starting point, at a quarter of the cost.
            centre = geometric_median(sample_scaled[:1024]) if b_dec_init == "geometric_median" \
                else sample_scaled.mean(0)
            sae.b_dec.copy_(centre)
        if cfg.normalize_decoder:
            sae.normalize_decoder_()
        # Ranks that saw different first batches (streamed input) all start from rank 0's weights.
        distributed.broadcast_(sae.parameters())
    del sample

    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999), fused=True)
    warmup = warmup_steps or max(1, steps // 100)
    sparsity_warmup = max(1, int(steps * sparsity_warmup_fraction))
    # Logging reads the whole (batch, d_sae) code matrix once more: at most ~100 points, at least 10 steps apart.
    log_every = log_every or max(10, steps // 100)
    if resample_at is None:
        resample_at = (0.25, 0.5) if cfg.traits.resample_dead else ()
    resample_steps = {int(f * steps) for f in resample_at if 0 < f < 1}
    dead_after = dead_after_rows or max(min(steps * batch_size // 5, 1_000_000), batch_size)
    rows_since_fired_F = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)
    batch_mean = distributed.mean_over_ranks if world > 1 else None
    parameters = list(sae.parameters())

    history = TrainHistory(scale_factor=scale)
    if num_threads is None and cfg.d_in * cfg.d_sae < 2**20:
        num_threads = 1
    restore_threads = set_torch_threads(num_threads)
    bar = tqdm(total=steps, desc=f"train {cfg.architecture} SAE", disable=not progress or not distributed.is_main(),
               mininterval=0.5)
    start = time.perf_counter()
    step = 0
    try:
        for x in batches:
            if step >= steps:
                break
            _check_batch(x, cfg.d_in, f"batch {step}")
            x_BD = x.to(device, torch.float32, non_blocking=True)
            if scale != 1.0:
                x_BD = x_BD * scale
            factor = lr_factor(step, steps, warmup, decay_fraction)
            for group in opt.param_groups:
                group["lr"] = lr * factor
            dead_F = rows_since_fired_F >= dead_after
            with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16,
                                enabled=autocast_dtype is not None):
                out = sae.loss(x_BD, dead_mask=dead_F if cfg.traits.top_k else None,
                               sparsity_scale=min(1.0, (step + 1) / sparsity_warmup), batch_mean=batch_mean)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            fired_F = distributed.average_gradients_(parameters, out.fired)
            if cfg.normalize_decoder:
                sae.remove_parallel_decoder_grad_()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(sae.parameters(), max_grad_norm)
            opt.step()
            with torch.no_grad():
                if cfg.normalize_decoder:
                    sae.normalize_decoder_()
                if cfg.traits.threshold:
                    sae.threshold.clamp_(min=1e-6)
                rows_since_fired_F += x_BD.shape[0] * world
                rows_since_fired_F.masked_fill_(fired_F, 0)
                if step in resample_steps and cfg.traits.resample_dead:
                    n = _resample_dead(sae, opt, rows_since_fired_F >= dead_after, x_BD, out.reconstruction,
                                       sae_gen)
                    if n and world > 1:  # every rank resampled from its own rows: rank 0's choice wins
                        distributed.broadcast_([*parameters, *_adam_moments(opt, parameters)])
                    if n:
                        history.resampled.append((step, n))
                        rows_since_fired_F.masked_fill_(rows_since_fired_F >= dead_after, 0)
                history.rows += x_BD.shape[0] * world
                if step % log_every == 0 or step == steps - 1:
                    _log(history, step, out, x_BD, dead_F, lr * factor)
                    bar.set_postfix(l0=f"{history.l0[-1]:.1f}", fvu=f"{history.fvu[-1]:.3f}", refresh=False)
            bar.update(1)
            step += 1
    finally:
        bar.close()
        restore_threads()
        history.steps = step
        history.seconds = time.perf_counter() - start
        if scale != 1.0:
            _fold_scale(sae, scale)
    return history


def _record_provenance(sae: SAE, activations) -> None:
    """Activations harvested to disk (an ActivationStore, or ShardBatches over one) name their hook point and
    model: an SAE that records none takes them, so later calls read the hook it was trained on."""
    store = getattr(activations, "store", activations)
    recorded = getattr(store, "metadata", None)
    if not isinstance(recorded, dict):
        return
    for name, key in (("hook_name", "hook_name"), ("model_name", "model")):
        if getattr(sae.cfg, name) is None and isinstance(recorded.get(key), str):
            setattr(sae.cfg, name, recorded[key])


def _adam_moments(opt: torch.optim.Optimizer, parameters: list[Tensor]) -> list[Tensor]:
    return [opt.state[p][key] for p in parameters if p in opt.state for key in ("exp_avg", "exp_avg_sq")]


def _chain(first: Tensor, rest: Iterator[Tensor]) -> Iterator[Tensor]:
    yield first
    yield from rest


def _check_batch(x, d_in: int, label: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"activations {label} is a {type(x).__name__}, expected a torch.Tensor")
    if x.ndim != 2 or x.shape[1] != d_in:
        raise ValueError(f"activations {label} has shape {tuple(x.shape)}, expected (rows, d_in={d_in})")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(1).sum())
        raise ValueError(f"activations {label} contains NaN or inf in {bad} row(s); clean or drop them first")


def _log(history: TrainHistory, step: int, out, x_BD: Tensor, dead_F: Tensor, lr: float) -> None:
    variance = (x_BD - x_BD.mean(0)).pow(2).sum(-1).mean()
    history.step.append(step)
    history.loss.append(float(out.loss))
    history.mse.append(float(out.mse))
    history.sparsity_loss.append(float(out.sparsity_loss))
    history.aux_loss.append(float(out.aux_loss))
    # Codes are >= 0, so sign() is 1 exactly where a latent fires; on CPU this beats count_nonzero many-fold.
    history.l0.append(float(out.active_values.sign().sum()) / x_BD.shape[0])
    history.fvu.append(float(out.mse / variance.clamp_min(1e-12)))
    history.dead_fraction.append(float(dead_F.float().mean()))
    history.lr.append(lr)


@torch.no_grad()
def _fold_scale(sae: SAE, scale: float) -> None:
    """Make the SAE read raw activations: it was trained on ``scale * x`` (SAELens folds the same way)."""
    sae.W_enc.mul_(scale)
    sae.W_dec.div_(scale)
    sae.b_dec.div_(scale)


# ------------------------------------------------------------- one setting of a sweep, trained and scored
@dataclass
class TradeoffPoint:
    """One SAE setting trained on activations with known true features: its numbers and what a figure needs."""

    architecture: str
    sparsity: float
    """k for topk, the L1 coefficient for relu."""
    d_sae: int
    l0: float
    fvu: float
    mmcs: float
    dead_fraction: float
    n_recovered: int
    """True features whose best decoder row has cosine > 0.9."""
    best_cosine: Tensor
    feature_density: Tensor
    seconds: float


def train_tradeoff_point(activations: Tensor, true_features: Tensor, architecture: str, sparsity: float,
                         d_sae: int, *, steps: int = 300, batch_size: int = 512, lr: float = 1e-2, seed: int = 0,
                         eval_rows: int = 5000) -> TradeoffPoint:
    """Train one SAE (``sparsity`` is k for topk, the L1 coefficient for relu) for ``steps`` on all but the last
    ``eval_rows`` rows of ``activations``, score it on those and against ``true_features`` (n_features, d_in)."""
    from saelab.metrics import evaluate, match_features  # only this sweep helper scores what it trained
    from saelab.sae import SAEConfig

    if architecture not in ("topk", "relu"):
        raise ValueError(f"architecture must be 'topk' or 'relu', got {architecture!r}")
    if activations.ndim != 2 or activations.shape[0] <= eval_rows:
        raise ValueError(f"activations must be (rows, d_in) with more than eval_rows={eval_rows} rows, "
                         f"got shape {tuple(activations.shape)}")
    start = time.perf_counter()
    kwargs = {"k": int(sparsity)} if architecture == "topk" else {"l1_coefficient": float(sparsity)}
    sae = SAE(SAEConfig(activations.shape[1], d_sae, architecture, **kwargs), seed=seed)
    train_sae(sae, activations[:-eval_rows], steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=False)
    ev = evaluate(sae, activations[-eval_rows:])
    match = match_features(sae, true_features)
    return TradeoffPoint(architecture, sparsity, d_sae, ev.l0, ev.fvu, match.mmcs, ev.dead_fraction,
                         match.n_recovered(0.9), match.best_cosine, ev.feature_density,
                         time.perf_counter() - start)
