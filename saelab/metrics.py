"""How good is an SAE? Sparsity (L0, dead and dense latents), reconstruction (MSE, FVU), and for data with
known features, how well the decoder found them (mean max cosine similarity and the matching).

Everything streams over the activations in batches, so evaluating never copies the whole tensor.
Shape letters: B batch, D d_in, F d_sae, T true features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from saelab.sae import SAE


@dataclass
class SAEEvaluation:
    """Summary of an SAE on a set of activations."""

    l0: float
    """Mean number of active latents per row."""
    mse: float
    """Mean over rows of the squared reconstruction error summed over d_in."""
    fvu: float
    """Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (0 is perfect)."""
    dead_fraction: float
    """Fraction of latents that never fired on these rows."""
    dense_fraction: float
    """Fraction of latents that fired on more than ``dense_threshold`` of the rows."""
    feature_density: Float[Tensor, "d_sae"]
    """Per latent: the fraction of rows on which it fired."""
    n_rows: int
    """How many rows were evaluated."""

    def density_histogram(self, bins: int = 40, *, floor: float = 1e-7) -> tuple[Tensor, Tensor]:
        """Histogram of log10(feature density): (bin edges, counts). Dead latents land in the floor bin."""
        return density_histogram(self.feature_density, bins=bins, floor=floor)

    def as_dict(self) -> dict[str, float]:
        return {"l0": self.l0, "mse": self.mse, "fvu": self.fvu, "dead_fraction": self.dead_fraction,
                "dense_fraction": self.dense_fraction, "n_rows": self.n_rows}


def _batches(activations: Tensor | Iterable[Tensor], batch_size: int) -> Iterable[Tensor]:
    if isinstance(activations, Tensor):
        for start in range(0, activations.shape[0], batch_size):
            yield activations[start:start + batch_size]
    else:
        yield from activations


@torch.no_grad()
def evaluate(sae: SAE, activations: Tensor | Iterable[Tensor], *, batch_size: int = 8192,
             dense_threshold: float = 0.1) -> SAEEvaluation:
    """L0, MSE, FVU, dead / dense fractions and feature densities of ``sae`` on ``activations``.

    ``activations`` is a (rows, d_in) tensor or any iterable of such batches, on any device: each batch is
    encoded on the SAE's.
    """
    d_in, device = sae.cfg.d_in, sae.W_enc.device
    fired_F = torch.zeros(sae.cfg.d_sae, dtype=torch.float64, device=device)
    sq_err = active = 0.0
    n = 0
    # FVU's denominator from running sums (float64, so that large activations do not lose precision).
    sum_D = torch.zeros(d_in, dtype=torch.float64, device=device)
    sum_sq = 0.0
    for i, x in enumerate(_batches(activations, batch_size)):
        if x.ndim != 2 or x.shape[1] != d_in:
            raise ValueError(f"activations batch {i} has shape {tuple(x.shape)}, expected (rows, d_in={d_in})")
        x = x.to(device, torch.float32)  # batches of a CPU tensor or store go to the SAE's device one at a time
        out = sae(x)
        nz_BF = out.feature_acts > 0
        fired_F += nz_BF.sum(0, dtype=torch.float64)
        active += float(nz_BF.sum())
        sq_err += float((out.reconstruction - x).double().pow(2).sum())
        sum_D += x.double().sum(0)
        sum_sq += float(x.double().pow(2).sum())
        n += x.shape[0]
    if n == 0:
        raise ValueError("activations is empty")
    total_var = sum_sq - float((sum_D * sum_D).sum()) / n
    density = (fired_F / n).float().cpu()
    return SAEEvaluation(
        l0=active / n, mse=sq_err / n, fvu=sq_err / max(total_var, 1e-30),
        dead_fraction=float((density == 0).float().mean()),
        dense_fraction=float((density > dense_threshold).float().mean()),
        feature_density=density, n_rows=n)


def density_histogram(density: Float[Tensor, "d_sae"], bins: int = 40, *, floor: float = 1e-7) -> tuple[Tensor, Tensor]:
    """Counts of latents by log10 firing density; never-firing latents are put at log10(floor)."""
    log_density = density.clamp_min(floor).log10()
    lo = float(torch.log10(torch.tensor(floor)))
    counts = torch.histc(log_density, bins=bins, min=lo, max=0.0)
    edges = torch.linspace(lo, 0.0, bins + 1)
    return edges, counts


class FeatureMatch(NamedTuple):
    """How an SAE's decoder rows line up with known true feature directions."""

    mmcs: float
    """Mean over true features of the best cosine with any decoder row (1 = every feature found exactly)."""
    best_cosine: Float[Tensor, "feat"]
    """Per true feature: its best cosine with a decoder row."""
    best_latent: Int[Tensor, "feat"]
    """Per true feature: the latent whose decoder row is closest."""
    one_to_one_cosine: Float[Tensor, "feat"]
    """Per true feature: cosine with its latent in a greedy one-to-one matching (no latent used twice)."""
    one_to_one_latent: Int[Tensor, "feat"]
    """Per true feature: its latent in that one-to-one matching (-1 when the SAE has fewer latents)."""

    def n_recovered(self, threshold: float = 0.9) -> int:
        """How many true features have a decoder row with cosine above ``threshold``."""
        return int((self.best_cosine > threshold).sum())


@torch.no_grad()
def cosine_matrix(W_dec: Float[Tensor, "d_sae d_in"], true_features: Float[Tensor, "feat d_in"]) -> Tensor:
    """Cosine similarity of every true feature (rows) with every decoder row (columns)."""
    if W_dec.shape[1] != true_features.shape[1]:
        raise ValueError(f"true_features have dimension {true_features.shape[1]}, decoder rows {W_dec.shape[1]}")
    dec = W_dec / W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    true = true_features / true_features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return true.float() @ dec.float().t()


@torch.no_grad()
def match_features(sae_or_W_dec: SAE | Tensor, true_features: Float[Tensor, "feat d_in"]) -> FeatureMatch:
    """Mean max cosine similarity (MMCS) between decoder rows and ``true_features``, and the matching."""
    W_dec = sae_or_W_dec.W_dec if isinstance(sae_or_W_dec, SAE) else sae_or_W_dec
    cos_TF = cosine_matrix(W_dec.detach(), true_features)
    best_T, latent_T = cos_TF.max(dim=1)
    # Greedy one-to-one: take the globally best remaining (feature, latent) pair, retire both, repeat.
    n_true, d_sae = cos_TF.shape
    one_cos = torch.zeros(n_true)
    one_lat = torch.full((n_true,), -1, dtype=torch.long)
    flat_cos = cos_TF.flatten()
    order = flat_cos.argsort(descending=True).tolist()
    values = flat_cos.tolist()
    used_t, used_f = [False] * n_true, [False] * d_sae
    left = min(n_true, d_sae)
    for flat in order:
        t, f = divmod(flat, d_sae)
        if used_t[t] or used_f[f]:
            continue
        used_t[t] = used_f[f] = True
        one_cos[t], one_lat[t] = values[flat], f
        left -= 1
        if left == 0:
            break
    return FeatureMatch(float(best_T.mean()), best_T, latent_T, one_cos, one_lat)
