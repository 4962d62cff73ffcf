"""Checkers for lesson 03 (sparse autoencoders): encoder/decoder, the loss, L0 and FVU, the TopK activation."""

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
        ((x @ W_enc + b_enc).relu(), "subtract b_dec from x before encoding (the decoder bias is the data's centre)"),
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
        raise ExerciseError(f"sae_loss should return one number (a 0-d tensor), got shape {tuple(actual.shape)}: "
                            "average over the batch")
    check_close(actual, expected, what="sae_loss", hints=[
        (mse + coef * f.sum(-1).mean(), "weight each latent's activation by its decoder row's norm ||W_dec[i]||: "
                                        "without it the SAE can shrink f and grow W_dec to dodge the penalty"),
        ((recon - x).pow(2).mean() + coef * l1, "sum the squared error over d_in (then average over rows), "
                                                 "don't average over d_in"),
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
        ((f > 0).float().sum(), "L0 is the mean number of active latents per row, not the total over the batch"),
        ((f > 0).float().mean(), "average the count over rows only: sum over latents first, then mean over rows"),
        (f.sum(-1).mean(), "count the active latents (f > 0), don't sum their values (that is L1)"),
    ])
    check_close(fvu_actual, fvu, what="FVU", rtol=1e-3, hints=[
        (sq_err / x.pow(2).sum(), "subtract the mean of x before measuring its variance: FVU compares with "
                                  "predicting the mean, not zero"),
        (1 - fvu, "that is the fraction of variance *explained*; FVU is the unexplained part"),
        ((recon - x).pow(2).mean() / x.var(), "use sums over rows and dimensions (total squared error / total "
                                              "variance around the mean)"),
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
        (torch.zeros_like(pre).scatter(-1, idx, values), "apply a ReLU to the k winners: a row whose largest "
                                                         "pre-activations are negative should stay all zero"),
        (torch.zeros_like(pre).scatter(-1, small_i, small_v.relu()), "you kept the k smallest; use largest=True"),
        (torch.zeros_like(pre).scatter(0, col_i, col_v.relu()), "take the top k along the latent dimension "
                                                                "(dim=-1), per row, not down the batch"),
        (pre.relu(), "only the k largest per row may stay non-zero"),
    ])
