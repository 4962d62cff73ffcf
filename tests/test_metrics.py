"""Metrics on SAEs with hand-set weights (exact answers) and feature matching on known directions."""

import pytest
import torch

from saelab.metrics import density_histogram, evaluate, match_features
from saelab.sae import SAE, SAEConfig
from saelab.synthetic import SparseFeatureData


def identity_sae(d: int = 4, d_sae: int = 6) -> SAE:
    """Latent i < d reads and writes axis i exactly; the extra latents never fire (encoder column -1s)."""
    sae = SAE(SAEConfig(d, d_sae, "relu"), seed=None)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_dec.zero_()
        sae.W_enc[:, :d] = torch.eye(d)
        sae.W_dec[:d] = torch.eye(d)
        sae.b_enc.zero_()
        sae.b_enc[d:] = -1.0
        sae.b_dec.zero_()
    return sae


def test_perfect_reconstruction_of_nonnegative_data():
    sae = identity_sae()
    x = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 3.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    ev = evaluate(sae, x)
    assert ev.mse == 0 and ev.fvu == 0
    assert ev.l0 == pytest.approx((2 + 2 + 4) / 3)
    assert ev.dead_fraction == pytest.approx(2 / 6)  # the two extra latents
    assert torch.allclose(ev.feature_density, torch.tensor([2 / 3, 1 / 3, 1.0, 2 / 3, 0.0, 0.0]))
    assert ev.dense_fraction == pytest.approx(4 / 6)
    assert ev.n_rows == 3


def test_fvu_of_negative_parts_matches_hand_computation():
    sae = identity_sae()
    # The ReLU drops negative entries: the error is exactly the negative part.
    x = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 1.0, -2.0, 0.0]])
    ev = evaluate(sae, x)
    sq_err = 1.0 + 4.0
    variance = float((x - x.mean(0)).pow(2).sum())
    assert ev.mse == pytest.approx(sq_err / 2)
    assert ev.fvu == pytest.approx(sq_err / variance)


def test_streaming_over_batches_equals_one_pass():
    sae = SAE(SAEConfig(8, 32, "topk", k=3), seed=1)
    x = torch.randn(1000, 8) + 3
    whole = evaluate(sae, x, batch_size=10_000)
    parts = evaluate(sae, iter(x.split(77)))
    assert parts.fvu == pytest.approx(whole.fvu, rel=1e-6)
    assert parts.l0 == pytest.approx(whole.l0) == pytest.approx(3.0, abs=0.01)
    assert torch.allclose(parts.feature_density, whole.feature_density)


def test_wrong_width_batch_is_named():
    sae = identity_sae()
    with pytest.raises(ValueError, match=r"activations batch 1 has shape \(3, 5\), expected \(rows, d_in=4\)"):
        evaluate(sae, [torch.ones(3, 4), torch.ones(3, 5)])


def test_density_histogram_counts_every_latent_and_puts_dead_ones_in_the_floor_bin():
    density = torch.tensor([0.0, 0.0, 1e-3, 1e-2, 0.5, 1.0])
    edges, counts = density_histogram(density, bins=7, floor=1e-7)
    assert counts.sum() == 6 and len(edges) == 8
    assert counts[0] == 2 and counts[-1] == 2


def test_mmcs_is_one_for_the_true_directions_in_any_order_and_scale():
    data = SparseFeatureData(n_features=20, d=8, seed=0)
    perm = torch.randperm(20)
    W_dec = torch.cat([data.directions[perm] * 3.0, torch.randn(5, 8)])
    match = match_features(W_dec, data.directions)
    assert match.mmcs == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(match.best_latent, perm.argsort())
    assert torch.equal(match.one_to_one_latent, perm.argsort())
    assert match.n_recovered(0.99) == 20


def test_mmcs_penalises_a_missing_feature_and_one_to_one_stops_reuse():
    true = torch.eye(3)
    # Two decoder rows both point at feature 0; nothing points at features 1 and 2 exactly.
    W_dec = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    match = match_features(W_dec, true)
    s = 2 ** -0.5
    assert match.mmcs == pytest.approx((1 + s + s) / 3)
    assert match.best_latent[0] in (0, 1)
    assert len(set(match.one_to_one_latent.tolist())) == 3
    assert match.one_to_one_cosine.tolist() == pytest.approx([1.0, s, 0.0], abs=1e-6) or \
        match.one_to_one_cosine.tolist() == pytest.approx([1.0, 0.0, s], abs=1e-6)


def test_synthetic_data_has_the_asked_sparsity_and_unit_directions():
    data = SparseFeatureData(n_features=100, d=16, feature_probability=0.05, seed=3)
    assert torch.allclose(data.directions.norm(dim=1), torch.ones(100))
    x = data.sample(4000, seed=1)
    assert x.shape == (4000, 16)
    # E||x||^2 = p * n * E[u^2] + cross terms ~ 0.05 * 100 / 3 (directions random, codes independent)
    assert x.pow(2).sum(-1).mean().item() == pytest.approx(0.05 * 100 / 3 + (0.05 * 100 * 0.5) ** 2 / 16, rel=0.35)
    assert torch.equal(x, data.sample(4000, seed=1)) and not torch.equal(x, data.sample(4000, seed=2))
    with pytest.raises(ValueError, match="feature_probability must be in"):
        SparseFeatureData(feature_probability=0.0)
