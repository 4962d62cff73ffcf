"""Sparse autoencoders: ``SAEConfig``, ``SAE`` (relu | topk | jumprelu) and SAELens-format files.

An SAE widens an activation vector ``x`` (``d_in``) into ``d_sae`` feature activations ``f``, asks that few
of them be non-zero, and reconstructs ``x`` as ``f @ W_dec + b_dec``. Each row of ``W_dec`` is a feature's
direction in activation space. Parameter names and shapes are SAELens's, so a folder written here loads in
SAELens / Neuronpedia tooling and back.

Shape letters in local names: B batch, D d_in, F d_sae, K active latents per row (TopK).
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from saelab.harvest import check_hook_name

Architecture = Literal["relu", "topk", "jumprelu"]
ARCHITECTURES: tuple[Architecture, ...] = get_args(Architecture)
CONFIG_FILE, WEIGHTS_FILE = "cfg.json", "sae_weights.safetensors"
# Provenance SAELens keeps in cfg.json's ``metadata``; here they are SAEConfig fields.
PROVENANCE = ("model_name", "hook_name")


@dataclass(frozen=True)
class Traits:
    """What an architecture does differently; the one place code asks "which architecture is this?"."""

    saelens_name: str
    """The name in SAELens's cfg.json (SAELens calls the ReLU + L1 SAE "standard")."""
    top_k: bool
    """Keeps the k largest pre-activations per row: needs ``k``; trains with AuxK, may nest (Matryoshka)."""
    threshold: bool
    """Has a learned per-latent threshold (a ``threshold`` parameter, an L0 penalty)."""
    unit_decoder: bool
    """Default of ``normalize_decoder``: an L1 weighted by decoder norms (relu) needs no unit rows."""
    resample_dead: bool
    """The trainer resamples dead latents (relu only: TopK has AuxK, JumpReLU its learned threshold)."""


TRAITS: dict[Architecture, Traits] = {
    "relu": Traits("standard", top_k=False, threshold=False, unit_decoder=False, resample_dead=True),
    "topk": Traits("topk", top_k=True, threshold=False, unit_decoder=True, resample_dead=False),
    "jumprelu": Traits("jumprelu", top_k=False, threshold=True, unit_decoder=True, resample_dead=False),
}
FROM_SAELENS_ARCHITECTURE = {traits.saelens_name: name for name, traits in TRAITS.items()}


@dataclass
class SAEConfig:
    """What an SAE is: its sizes, architecture and the sparsity penalty it is trained with."""

    d_in: int
    """Width of the activations it reads (e.g. d_model, or d_hidden of a toy model)."""
    d_sae: int
    """Number of latents (dictionary size); usually several times ``d_in``."""
    architecture: Architecture = "relu"
    """``relu`` (ReLU + decoder-norm-weighted L1), ``topk`` (keep the k largest) or ``jumprelu`` (learned threshold)."""
    k: int | None = None
    """TopK only: active latents per row (1 <= k <= d_sae)."""
    l1_coefficient: float = 0.2
    """ReLU only: weight of the L1 penalty sum_i f_i * ||W_dec[i]|| (per row, on unit-mean-squared-norm inputs;
    Anthropic's 5 on inputs of mean squared norm d_in is 5 / sqrt(d_in) here, about 0.2 for d_in 576)."""
    l0_coefficient: float = 1e-3
    """JumpReLU only: weight of the (straight-through) L0 penalty, the number of active latents per row."""
    jumprelu_init_threshold: float = 1e-3
    """JumpReLU only: initial threshold of every latent."""
    jumprelu_bandwidth: float = 1e-3
    """JumpReLU only: width of the rectangle kernel that carries gradients to the thresholds."""
    aux_k: int | None = None
    """TopK only: latents used by the AuxK loss that revives dead latents (default ``d_in // 2``, capped at d_sae)."""
    aux_k_coefficient: float = 1 / 32
    """TopK only: weight of the AuxK loss (0 turns it off)."""
    matryoshka_groups: int = 1
    """TopK only, training only: with G > 1, the first d_sae / 2**(G-1) latents, the first d_sae / 2**(G-2), ...
    and all of them must each reconstruct the input on their own (the loss is the mean of the G errors), so the
    first latents learn broad features and later ones refine them, instead of one concept splitting over many
    (Bussmann et al. 2025, Matryoshka SAEs). Encoding and decoding do not change."""
    apply_b_dec_to_input: bool = True
    """Subtract ``b_dec`` from the input before encoding (as SAELens does by default)."""
    normalize_decoder: bool | None = None
    """Keep decoder rows at unit norm while training (default: True for topk/jumprelu, False for relu,
    whose L1 is weighted by the decoder norms instead)."""
    hook_name: str | None = None
    """The hook point the SAE reads, e.g. ``"blocks.15.hook_resid_post"``; calls that take an SAE use it.
    None for an SAE on a toy model or of unknown origin (those calls then need ``hook_name=``)."""
    model_name: str | None = None
    """The model whose activations it was trained on (``model.cfg.model_name``), for the record."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Other free-form provenance (context size, ...) kept in ``cfg.json`` under SAELens's ``metadata`` key."""

    def __post_init__(self) -> None:
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.architecture not in ARCHITECTURES:  # a tuple, so an unhashable value gets this error too
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}; got {self.architecture!r}")
        if not isinstance(self.metadata, dict):
            raise ValueError(f"metadata must be a dict, got {type(self.metadata).__name__}")
        # Provenance given the old way (in metadata) moves to its field, so there is one place to read it.
        self.metadata = dict(self.metadata)
        for name in PROVENANCE:
            recorded = self.metadata.pop(name, None)
            if getattr(self, name) is None:
                setattr(self, name, recorded)
            elif recorded is not None and recorded != getattr(self, name):
                raise ValueError(f"{name}={getattr(self, name)!r} disagrees with metadata[{name!r}]={recorded!r}")
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty string or None, got {value!r}")
        if self.traits.top_k:
            if self.k is None or isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= self.d_sae:
                raise ValueError(f"k must be an integer with 1 <= k <= d_sae={self.d_sae} for a topk SAE, got {self.k!r}")
            if self.aux_k is None:
                self.aux_k = min(max(self.d_in // 2, 1), self.d_sae)
            if not isinstance(self.aux_k, int) or not 1 <= self.aux_k <= self.d_sae:
                raise ValueError(f"aux_k must be an integer with 1 <= aux_k <= d_sae={self.d_sae}, got {self.aux_k!r}")
        groups = self.matryoshka_groups
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or self.d_sae % 2 ** (groups - 1):
            raise ValueError(f"matryoshka_groups must be an integer >= 1 with d_sae={self.d_sae} divisible by "
                             f"2**(groups - 1), got {groups!r}")
        if groups > 1 and not self.traits.top_k:
            raise ValueError(f"matryoshka_groups > 1 needs a topk SAE, got architecture={self.architecture!r}")
        for name in ("l1_coefficient", "l0_coefficient", "aux_k_coefficient"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("jumprelu_init_threshold", "jumprelu_bandwidth"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.normalize_decoder is None:
            self.normalize_decoder = self.traits.unit_decoder

    @property
    def traits(self) -> Traits:
        """What this architecture does differently (see :data:`TRAITS`)."""
        return TRAITS[self.architecture]

    def provenance(self) -> dict[str, Any]:
        """``model_name``, ``hook_name`` (where known) and ``metadata``, as SAELens keeps them in one dict."""
        # Written there in cfg.json, so SAELens's tools read our files and we read theirs.
        recorded = {name: getattr(self, name) for name in PROVENANCE if getattr(self, name) is not None}
        return {**recorded, **self.metadata}

    def to_saelens_dict(self) -> dict[str, Any]:
        """The ``cfg.json`` content: SAELens's keys first, saelab's training settings under ``metadata``."""
        out: dict[str, Any] = {
            "architecture": self.traits.saelens_name,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": self.apply_b_dec_to_input,
            "normalize_activations": "none",
            "reshape_activations": "none",
        }
        if self.traits.top_k:
            out["k"] = self.k
            out["rescale_acts_by_decoder_norm"] = False
        saelab = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("d_in", "d_sae", "architecture", "k", "apply_b_dec_to_input", "metadata",
                                    *PROVENANCE)}
        out["metadata"] = {**self.provenance(), "saelab": saelab}
        return out

    @classmethod
    def from_saelens_dict(cls, raw: Any, *, source: str = CONFIG_FILE) -> "SAEConfig":
        """Read a SAELens ``cfg.json`` dict (ours or SAELens's own); one-line errors for what we cannot read."""
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        arch = raw.get("architecture", "standard")
        if arch not in FROM_SAELENS_ARCHITECTURE:
            raise ValueError(f"{source}: architecture {arch!r} is not supported (supported: standard, topk, jumprelu)")
        for key in ("d_in", "d_sae"):
            if key not in raw:
                raise ValueError(f"{source}: missing required key {key!r}")
        for key, allowed in (("normalize_activations", ("none", None)), ("reshape_activations", ("none", None)),
                             ("rescale_acts_by_decoder_norm", (False, None))):
            if raw.get(key) not in allowed:
                raise ValueError(f"{source}: {key}={raw.get(key)!r} is not supported (only {allowed[0]!r})")
        metadata = dict(raw.get("metadata") or {})
        saelab = metadata.pop("saelab", {}) or {}
        if not isinstance(saelab, dict):
            raise ValueError(f"{source}: metadata.saelab must be an object")
        known = {f.name for f in dataclasses.fields(cls)} - set(PROVENANCE)
        settings = {k: v for k, v in saelab.items() if k in known}
        return cls(d_in=raw["d_in"], d_sae=raw["d_sae"], architecture=FROM_SAELENS_ARCHITECTURE[arch],
                   k=raw.get("k"), apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
                   metadata=metadata, **settings)


class SAEOutput(NamedTuple):
    """What ``SAE.forward`` returns. Losses are per-row means (scalars); ``loss`` is what training minimises."""

    reconstruction: Float[Tensor, "batch d_in"]
    """The decoded input, ``feature_acts @ W_dec + b_dec``."""
    feature_acts: Float[Tensor, "batch d_sae"]
    """Latent activations, always a dense tensor (zero outside each row's k winners for TopK). The trainer, which
    needs no codes, calls ``SAE.loss`` instead, and a TopK SAE then never builds this (batch, d_sae) matrix."""
    loss: Float[Tensor, ""]
    """``mse + sparsity_loss + aux_loss``."""
    mse: Float[Tensor, ""]
    """Squared reconstruction error summed over d_in, averaged over rows."""
    sparsity_loss: Float[Tensor, ""]
    """relu: coefficient * decoder-norm-weighted L1; jumprelu: coefficient * L0; topk: 0."""
    aux_loss: Float[Tensor, ""]
    """topk: AuxK loss that teaches dead latents to model the residual; else 0."""
    fired: Bool[Tensor, "d_sae"]
    """Which latents were active on at least one row of the batch (the trainer's dead-latent bookkeeping)."""


# What ``SAE.loss`` returns: SAEOutput's fields, with ``active_values`` in place of the dense codes: every code
# value that can be non-zero, detached (each row's k winners for TopK, else all d_sae codes). Codes are >= 0, so
# its positive entries over the rows count L0.
SAELoss = NamedTuple("SAELoss", [("active_values" if name == "feature_acts" else name, SAEOutput.__annotations__[name])
                                 for name in SAEOutput._fields])


class _ThresholdStep(torch.autograd.Function):
    """JumpReLU's two threshold functions: ``pre * H(pre - threshold)`` (``gate=True``, the codes) or
    ``H(pre - threshold)`` (the L0 count). The step has no gradient; the threshold learns through a
    rectangle-kernel straight-through estimator of width ``bandwidth`` (Rajamanoharan et al. 2024)."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth, gate):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth, ctx.gate = bandwidth, gate
        return pre * (pre > threshold) if gate else (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        near = ((pre - threshold).abs() < bw / 2).to(pre.dtype)
        # d/dθ of θ·H(pre - θ) is -θ·δ, of H(pre - θ) is -δ; δ is estimated by the kernel near / bw.
        height = threshold if ctx.gate else 1.0
        grad_threshold = (-(height / bw) * near * grad_out).sum(0)
        grad_pre = grad_out * (pre > threshold) if ctx.gate else None
        return grad_pre, grad_threshold, None, None


def check_feature_index(d_sae: int, feature: int) -> int:
    """``feature`` as a Python int in ``0..d_sae - 1``, or a one-line error naming the allowed range."""
    try:
        index = None if isinstance(feature, (bool, float)) else operator.index(feature)
    except TypeError:
        index = None
    if index is None or not 0 <= index < d_sae:
        raise ValueError(f"feature must be an integer in 0..{d_sae - 1}, got {feature!r}")
    return index


class SAE(nn.Module):
    """A sparse autoencoder with SAELens's parameter names: W_enc, b_enc, W_dec, b_dec (+ threshold)."""

    def __init__(self, cfg: SAEConfig, *, seed: int | None = 0, decoder_init_norm: float = 0.1):
        super().__init__()
        if not isinstance(cfg, SAEConfig):
            raise TypeError(f"cfg must be an SAEConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        # Decoder rows: random directions; the encoder starts as the decoder's transpose (Anthropic, Gao et al.).
        W_dec_FD = torch.randn(cfg.d_sae, cfg.d_in, generator=gen)
        norm = 1.0 if cfg.normalize_decoder else decoder_init_norm
        W_dec_FD *= norm / W_dec_FD.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec_FD)
        self.W_enc = nn.Parameter(W_dec_FD.t().clone())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        if cfg.traits.threshold:
            self.threshold = nn.Parameter(torch.full((cfg.d_sae,), cfg.jumprelu_init_threshold))

    # ----------------------------------------------------------------- what it reads, and checks on it
    @property
    def hook_name(self) -> str:
        """The hook point this SAE reads (``cfg.hook_name``)."""
        if self.cfg.hook_name is None:
            raise ValueError("this SAE does not record the hook point it reads: pass hook_name=... to the call, "
                             "or set sae.cfg.hook_name")
        return self.cfg.hook_name

    def check_feature(self, feature: int) -> int:
        """``feature`` as a Python int, or a one-line error naming the allowed range (numpy/torch integers too)."""
        return check_feature_index(self.cfg.d_sae, feature)

    def check_width(self, model) -> None:
        """Refuse a model whose residual width is not this SAE's ``d_in``."""
        if self.cfg.d_in != model.cfg.d_model:
            raise ValueError(f"the SAE reads d_in={self.cfg.d_in} but the model's d_model is {model.cfg.d_model}: "
                             "it was trained on another model")

    def check_fits(self, model, hook_name: str | None = None) -> str:
        """Refuse a model (or a ``hook_name`` override) this SAE was not trained on, naming both sides;
        return the hook point to read: ``hook_name`` if given, else the SAE's own."""
        name = self.hook_name if hook_name is None else hook_name
        check_hook_name(model, name)
        self.check_width(model)
        if self.cfg.hook_name is not None and self.cfg.hook_name != name:
            raise ValueError(f"the SAE was trained on {self.cfg.hook_name!r}, not on hook_name={name!r}")
        return name

    # ----------------------------------------------------------------- the model
    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"x has last dimension {x.shape[-1]}, but this SAE has d_in={self.cfg.d_in}")

    def pre_activations(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        """The encoder's affine map, before ReLU / TopK / threshold."""
        bias, rows = self.b_enc, x.reshape(-1, self.cfg.d_in)
        if self.cfg.apply_b_dec_to_input:
            if torch.is_grad_enabled():
                # (x - b_dec) W_enc + b_enc, with b_dec folded into the bias: subtracting it from x would make
                # autograd compute a gradient for the whole input, one more (batch x d_in x d_sae) matmul per step.
                bias = self.b_enc - self.b_dec @ self.W_enc
            else:
                # Without autograd, refolding costs a (d_in x d_sae) product per call — as much as encoding one
                # token, which is what a steering hook does at every decoding step. Subtracting is cheaper.
                rows = rows - self.b_dec
        return torch.addmm(bias, rows, self.W_enc).reshape(*x.shape[:-1], -1)

    def _topk(self, pre_BF: Tensor) -> tuple[Tensor, Int[Tensor, "batch k"]]:
        values_BK, idx_BK = pre_BF.topk(self.cfg.k, dim=-1, sorted=False)
        return values_BK.relu(), idx_BK

    def encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        """Feature activations of ``x`` (dense tensor, mostly zeros)."""
        self._check_input(x)
        pre = self.pre_activations(x)
        if self.cfg.traits.top_k:
            values, idx = self._topk(pre)
            return torch.zeros_like(pre).scatter_(-1, idx, values)
        return self._dense_codes(pre)

    def _dense_codes(self, pre: Tensor) -> Tensor:
        if self.cfg.traits.threshold:
            return _ThresholdStep.apply(pre, self.threshold, self.cfg.jumprelu_bandwidth, True)
        return pre.relu()

    def decode(self, f: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_in"]:
        """Reconstruction ``f @ W_dec + b_dec``."""
        if f.shape[-1] != self.cfg.d_sae:
            raise ValueError(f"feature activations have last dimension {f.shape[-1]}, expected d_sae={self.cfg.d_sae}")
        return torch.addmm(self.b_dec, f.reshape(-1, self.cfg.d_sae), self.W_dec).reshape(*f.shape[:-1], -1)

    def decode_sparse(self, values_BK: Tensor, idx_BK: Tensor) -> Float[Tensor, "batch d_in"]:
        """Decode from the k winners only: a weighted sum of k decoder rows per row (no (batch, d_sae) matmul).

        In the decoder's dtype even under autocast: a gather of k rows is memory-bound, not a matmul."""
        values_BK = values_BK.to(self.W_dec.dtype)
        return F.embedding_bag(idx_BK, self.W_dec, per_sample_weights=values_BK, mode="sum") + self.b_dec

    def forward(self, x: Float[Tensor, "batch d_in"], dead_mask: Tensor | None = None,
                sparsity_scale: float = 1.0, batch_mean: Callable[[Tensor], Tensor] | None = None) -> SAEOutput:
        """Encode, decode and compute the training loss; the arguments are :meth:`loss`'s."""
        losses, codes_BF = self._losses(x, dead_mask, sparsity_scale, batch_mean, dense_codes=True)
        return SAEOutput(losses.reconstruction, codes_BF.reshape(*x.shape[:-1], self.cfg.d_sae), *losses[2:])

    def loss(self, x: Float[Tensor, "batch d_in"], dead_mask: Tensor | None = None,
             sparsity_scale: float = 1.0, batch_mean: Callable[[Tensor], Tensor] | None = None) -> SAELoss:
        """The training loss of ``x``, without building the dense codes (the trainer's step).

        ``dead_mask`` (d_sae bools, latents that have not fired for a while) feeds TopK's AuxK loss;
        ``sparsity_scale`` multiplies the sparsity penalty (the trainer warms it up from 0 to 1);
        ``batch_mean`` turns this batch's mean of a statistic into the mean over the whole batch when the batch
        is split over processes (the AuxK loss's normaliser; see :mod:`saelab.distributed`).
        """
        return self._losses(x, dead_mask, sparsity_scale, batch_mean, dense_codes=False)[0]

    def _losses(self, x: Tensor, dead_mask: Tensor | None, sparsity_scale: float,
                batch_mean: Callable[[Tensor], Tensor] | None, dense_codes: bool) -> tuple[SAELoss, Tensor | None]:
        self._check_input(x)
        cfg, zero = self.cfg, x.new_zeros(())
        x_BD = x.reshape(-1, cfg.d_in)
        pre_BF = self.pre_activations(x_BD)
        aux, nested_mse, f_BF = zero, None, None
        if cfg.traits.top_k:
            values_BK, idx_BK = self._topk(pre_BF)
            recon_BD = self.decode_sparse(values_BK, idx_BK)
            if cfg.matryoshka_groups > 1:
                nested_mse = self._matryoshka_mse(x_BD, values_BK, idx_BK, recon_BD)
            # Codes for the output are built without autograd: the gradient flows through the k winners only.
            with torch.no_grad():
                active = values_BK.detach()
                if dense_codes:
                    f_BF = torch.zeros_like(pre_BF).scatter_(-1, idx_BK, values_BK)
                # A latent fired if some row gave it a positive value (bincount sums the values per latent).
                fired_F = torch.bincount(idx_BK.flatten(), weights=active.flatten(), minlength=cfg.d_sae) > 0
            sparsity = zero
            if dead_mask is not None and cfg.aux_k_coefficient > 0 and bool(dead_mask.any()):
                aux = cfg.aux_k_coefficient * self._aux_k_loss(x_BD - recon_BD.detach(), pre_BF, dead_mask,
                                                               batch_mean)
        else:
            f_BF = self._dense_codes(pre_BF)
            if cfg.traits.threshold:
                counts_F = _ThresholdStep.apply(pre_BF, self.threshold, cfg.jumprelu_bandwidth, False).sum(0)
                sparsity = sparsity_scale * cfg.l0_coefficient * counts_F.sum() / x_BD.shape[0]
                fired_F = counts_F.detach() > 0
            else:
                # sum_b sum_i f_bi ||W_dec_i|| as (sum over batch first) . norms: one pass over the codes, not two.
                f_sum_F = f_BF.sum(0)
                sparsity = sparsity_scale * cfg.l1_coefficient * (f_sum_F @ self.W_dec.norm(dim=1)) / x_BD.shape[0]
                fired_F = f_sum_F.detach() > 0
            recon_BD = torch.addmm(self.b_dec, f_BF, self.W_dec)
            active = f_BF.detach()
        mse = (recon_BD - x_BD).pow(2).sum(-1).mean()
        loss = (mse if nested_mse is None else nested_mse) + sparsity + aux
        return SAELoss(recon_BD.reshape(x.shape), active, loss, mse, sparsity, aux, fired_F), f_BF

    def _matryoshka_mse(self, x_BD: Tensor, values_BK: Tensor, idx_BK: Tensor, recon_BD: Tensor) -> Tensor:
        """Mean over the nested prefixes of the reconstruction error using only the winners inside each prefix.

        Each prefix's reconstruction is the full one minus the winners beyond it, so every prefix costs one
        sparse decode of its complement (k rows per input), not a (batch, d_sae) product."""
        groups, d_sae = self.cfg.matryoshka_groups, self.cfg.d_sae
        errors = [(recon_BD - x_BD).pow(2).sum(-1).mean()]
        for g in range(1, groups):
            prefix = d_sae >> g  # d_sae/2, d_sae/4, ...
            beyond = values_BK.to(self.W_dec.dtype) * (idx_BK >= prefix)
            nested_BD = recon_BD - F.embedding_bag(idx_BK, self.W_dec, per_sample_weights=beyond, mode="sum")
            errors.append((nested_BD - x_BD).pow(2).sum(-1).mean())
        return torch.stack(errors).mean()

    def _aux_k_loss(self, residual_BD: Tensor, pre_BF: Tensor, dead_mask: Tensor,
                    batch_mean: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Gao et al.'s AuxK: the top aux_k *dead* latents try to reconstruct what the live ones missed."""
        dead_idx = dead_mask.nonzero().squeeze(1)
        k_aux = min(self.cfg.aux_k, dead_idx.numel())
        # Only the dead latents' columns are searched (usually few), not the whole (batch, d_sae) matrix.
        values, pos = pre_BF.index_select(1, dead_idx).topk(k_aux, dim=-1, sorted=False)
        weights = values.relu().to(self.W_dec.dtype)
        aux_recon = F.embedding_bag(dead_idx[pos], self.W_dec, per_sample_weights=weights, mode="sum")
        scale = residual_BD.pow(2).sum(-1).mean()
        scale = (batch_mean(scale) if batch_mean is not None else scale).clamp_min(1e-12)
        return (aux_recon - residual_BD).pow(2).sum(-1).mean() / scale

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale decoder rows to unit norm (a no-op where they already are)."""
        self.W_dec.div_(torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_decoder_grad_(self) -> None:
        """Drop the part of W_dec's gradient that would only change row norms (kept at 1 by the trainer)."""
        if self.W_dec.grad is not None:  # in place, without (d_sae, d_in) temporaries
            parallel = torch.linalg.vecdot(self.W_dec.grad, self.W_dec, dim=1).unsqueeze(1)
            self.W_dec.grad.addcmul_(parallel, self.W_dec, value=-1.0)

    # ----------------------------------------------------------------- files
    def save(self, folder: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
        """Write ``cfg.json`` + ``sae_weights.safetensors`` (SAELens layout) atomically; return the folder.

        ``dtype``: the weights' file dtype (float16 halves the file; ``load`` always returns float32).
        """
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"folder {str(folder)!r} exists and is not a directory")
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {name: p.detach().to("cpu", dtype).contiguous() for name, p in self.named_parameters()}
        cfg_text = json.dumps(self.cfg.to_saelens_dict(), indent=2)
        from saelab.files import write_files_atomic

        # Both files are written in full before either is renamed into place: an interrupted save leaves the
        # previous files as they were and no half-written file behind.
        write_files_atomic(folder, {
            WEIGHTS_FILE: lambda temporary: save_file(tensors, temporary, metadata={"format": "pt"}),
            CONFIG_FILE: lambda temporary: Path(temporary).write_text(cfg_text),
        })
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "SAE":
        """Load a folder in SAELens layout (written by ``save`` or by SAELens's ``save_model``). safetensors only."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"folder {str(folder)!r} does not exist or is not a directory")
        cfg_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path}: missing (an SAE folder holds {CONFIG_FILE} and {WEIGHTS_FILE})")
        try:
            raw = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{cfg_path}: not valid JSON ({error})") from None
        cfg = SAEConfig.from_saelens_dict(raw, source=str(cfg_path))
        if not weights_path.is_file():
            others = sorted(p.name for p in folder.iterdir() if p.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt"))
            extra = f"; found {', '.join(others)}, which saelab never loads (pickle formats)" if others else ""
            raise FileNotFoundError(f"{weights_path}: missing{extra}")
        try:
            tensors = load_file(weights_path)
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise ValueError(f"{weights_path}: not a readable safetensors file ({str(error).splitlines()[0]})") from None
        sae = cls(cfg, seed=None)
        expected = {name: tuple(p.shape) for name, p in sae.named_parameters()}
        missing = sorted(set(expected) - set(tensors))
        if missing:
            raise ValueError(f"{weights_path}: missing tensors {missing} (have {sorted(tensors)})")
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != shape:
                raise ValueError(f"{weights_path}: {name} has shape {tuple(tensors[name].shape)}, "
                                 f"but {CONFIG_FILE} implies {shape}")
        with torch.no_grad():
            for name, p in sae.named_parameters():
                p.copy_(tensors[name].to(torch.float32))
        return sae

