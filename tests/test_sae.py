"""The SAE model: config validation, hand-set weights with known outputs, the TopK fast path, gradients."""

import pytest
import torch
import torch.nn.functional as F

from saelab.sae import SAE, SAEConfig


def hand_set_sae(architecture: str, **kwargs) -> SAE:
    """d_in 2, d_sae 3: latent i reads input axis i (latent 2 reads their sum); decoder = encoder transpose."""
    sae = SAE(SAEConfig(2, 3, architecture, **kwargs), seed=None)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))
        sae.b_enc.copy_(torch.tensor([0.0, 0.0, -1.0]))
        sae.W_dec.copy_(sae.W_enc.t())
        sae.b_dec.zero_()
    return sae


def test_relu_encode_decode_exact():
    sae = hand_set_sae("relu", l1_coefficient=2.0)
    x = torch.tensor([[2.0, -1.0], [1.0, 3.0]])
    f = sae.encode(x)
    assert torch.equal(f, torch.tensor([[2.0, 0.0, 0.0], [1.0, 3.0, 3.0]]))
    assert torch.equal(sae.decode(f), torch.tensor([[2.0, 0.0], [4.0, 6.0]]))
    out = sae(x)
    # mse: rows err (0,1) and (3,3) -> (1 + 18) / 2; L1 weighted by decoder norms (1, 1, sqrt 2)
    assert out.mse.item() == pytest.approx(9.5)
    l1 = ((2 + 0 + 0) + (1 + 3 + 3 * 2 ** 0.5)) / 2
    assert out.sparsity_loss.item() == pytest.approx(2.0 * l1)
    assert out.loss.item() == pytest.approx(9.5 + 2.0 * l1)
    assert out.aux_loss.item() == 0


def test_b_dec_is_subtracted_before_encoding_when_configured():
    sae = hand_set_sae("relu")
    with torch.no_grad():
        sae.b_dec.copy_(torch.tensor([1.0, 1.0]))
    x = torch.tensor([[2.0, 1.0]])
    assert torch.equal(sae.encode(x), torch.tensor([[1.0, 0.0, 0.0]]))
    sae.cfg.apply_b_dec_to_input = False
    assert torch.equal(sae.encode(x), torch.tensor([[2.0, 1.0, 2.0]]))


def test_topk_keeps_k_largest_and_fast_decode_matches_dense():
    sae = hand_set_sae("topk", k=1)
    x = torch.tensor([[2.0, 3.0], [5.0, -1.0]])
    f = sae.encode(x)
    assert torch.equal(f, torch.tensor([[0.0, 0.0, 4.0], [5.0, 0.0, 0.0]]))
    out = sae(x)
    assert torch.equal(out.feature_acts, f)
    assert torch.allclose(out.reconstruction, sae.decode(f))


def test_topk_fast_path_gradients_equal_dense_decode():
    torch.manual_seed(0)
    cfg = SAEConfig(16, 64, "topk", k=5)
    sae = SAE(cfg, seed=3)
    x = torch.randn(50, 16)
    out = sae(x)
    out.loss.backward()
    fast = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    # Reference: dense codes through a plain matmul decode.
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    values, idx = pre.topk(5, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, idx, values.relu())
    recon = f @ sae.W_dec + sae.b_dec
    (recon - x).pow(2).sum(-1).mean().backward()
    assert torch.allclose(out.reconstruction, recon, atol=1e-5)
    for name, p in sae.named_parameters():
        assert torch.allclose(fast[name], p.grad, atol=1e-5), name


def test_topk_aux_loss_only_with_dead_latents_and_trains_only_dead_ones():
    sae = SAE(SAEConfig(8, 32, "topk", k=2), seed=0)
    x = torch.randn(20, 8)
    assert sae(x).aux_loss.item() == 0
    dead = torch.zeros(32, dtype=torch.bool)
    dead[:6] = True
    out = sae(x, dead_mask=dead)
    assert out.aux_loss.item() > 0
    sae.zero_grad()
    out.aux_loss.backward()
    # The AuxK loss moves only dead latents' decoder rows.
    touched = sae.W_dec.grad.abs().sum(1) > 0
    assert touched[:6].any() and not touched[6:].any()


def test_jumprelu_threshold_gets_gradient_and_gates():
    sae = hand_set_sae("jumprelu", jumprelu_init_threshold=1.5, jumprelu_bandwidth=1.0, l0_coefficient=0.5)
    x = torch.tensor([[2.0, 1.2]])
    f = sae.encode(x)
    assert torch.allclose(f, torch.tensor([[2.0, 0.0, 2.2]]))
    out = sae(x)
    assert out.sparsity_loss.item() == pytest.approx(0.5 * 2)
    out.loss.backward()
    # Latent 1 (pre 1.2) sits within half a bandwidth of its threshold: the estimator gives it a gradient.
    assert sae.threshold.grad[1] != 0


def test_forward_output_is_named_and_fixed_length():
    for arch, kw in (("relu", {}), ("topk", {"k": 2}), ("jumprelu", {})):
        out = SAE(SAEConfig(4, 8, arch, **kw))(torch.randn(3, 4))
        assert out._fields == ("reconstruction", "feature_acts", "loss", "mse", "sparsity_loss", "aux_loss",
                               "fired")
        assert torch.equal(out.fired, (out.feature_acts > 0).any(0))
        assert out.reconstruction.shape == (3, 4) and out.feature_acts.shape == (3, 8)


def test_decoder_rows_start_unit_norm_when_the_recipe_calls_for_it():
    assert torch.allclose(SAE(SAEConfig(8, 16, "topk", k=2)).W_dec.norm(dim=1), torch.ones(16))
    assert torch.allclose(SAE(SAEConfig(8, 16, "relu")).W_dec.norm(dim=1), torch.full((16,), 0.1))


def test_extra_leading_dims_are_kept():
    sae = SAE(SAEConfig(4, 8, "relu"))
    x = torch.randn(2, 5, 4)
    assert sae.encode(x).shape == (2, 5, 8)
    assert sae(x).reconstruction.shape == (2, 5, 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(d_in=0, d_sae=4), "d_in must be a positive integer"),
        (dict(d_in=4, d_sae=2.5), "d_sae must be a positive integer"),
        (dict(d_in=4, d_sae=8, architecture="gated"), "architecture must be one of relu, topk, jumprelu; got 'gated'"),
        (dict(d_in=4, d_sae=8, architecture=["topk"]), "architecture must be one of relu, topk, jumprelu"),
        (dict(d_in=4, d_sae=8, architecture="topk", k=9), "k must be an integer with 1 <= k <= d_sae=8"),
        (dict(d_in=4, d_sae=8, architecture="topk"), "k must be an integer"),
        (dict(d_in=4, d_sae=8, l1_coefficient=-1.0), "l1_coefficient must be a finite number >= 0"),
        (dict(d_in=4, d_sae=8, l0_coefficient=float("nan")), "l0_coefficient must be a finite number >= 0"),
        (dict(d_in=4, d_sae=8, jumprelu_bandwidth=0), "jumprelu_bandwidth must be a finite number > 0"),
        (dict(d_in=4, d_sae=8, architecture="topk", k=2, aux_k=0), "aux_k must be an integer"),
    ],
)
def test_bad_config_gives_one_line_error(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        SAEConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_wrong_input_width_is_a_clear_error():
    sae = SAE(SAEConfig(4, 8, "relu"))
    with pytest.raises(ValueError, match="last dimension 5, but this SAE has d_in=4"):
        sae(torch.randn(3, 5))
    with pytest.raises(ValueError, match="expected d_sae=8"):
        sae.decode(torch.randn(3, 7))


def test_embedding_bag_decode_is_the_dense_product():
    sae = SAE(SAEConfig(6, 10, "topk", k=3), seed=2)
    values, idx = torch.rand(4, 3), torch.randint(0, 10, (4, 3))
    dense = torch.zeros(4, 10).scatter_add(1, idx, values)
    assert torch.allclose(sae.decode_sparse(values, idx), dense @ sae.W_dec + sae.b_dec, atol=1e-6)
    assert torch.allclose(F.embedding_bag(idx, sae.W_dec, per_sample_weights=values, mode="sum"),
                          dense @ sae.W_dec, atol=1e-6)


@pytest.mark.parametrize("architecture", ["relu", "topk", "jumprelu"])
def test_loss_without_codes_equals_forward(architecture):
    sae = SAE(SAEConfig(8, 32, architecture, k=3 if architecture == "topk" else None), seed=1)
    x = torch.randn(10, 8)
    out, losses = sae(x), sae.loss(x)
    assert out.feature_acts.layout == torch.strided and out.feature_acts.shape == (10, 32)
    for name in ("reconstruction", "loss", "mse", "sparsity_loss", "aux_loss", "fired"):
        assert torch.equal(getattr(losses, name), getattr(out, name)), name
    # active_values holds every non-zero code: its positives count L0 as the dense codes do.
    assert int((losses.active_values > 0).sum()) == int((out.feature_acts > 0).sum())
    if architecture == "topk":
        assert losses.active_values.shape == (10, 3)


def test_decoder_gradient_loses_only_its_norm_changing_part():
    sae = SAE(SAEConfig(8, 32, "topk", k=3), seed=1)
    sae(torch.randn(20, 8)).loss.backward()
    before = sae.W_dec.grad.clone()
    sae.remove_parallel_decoder_grad_()
    assert torch.allclose((sae.W_dec.grad * sae.W_dec).sum(1), torch.zeros(32), atol=1e-6)
    parallel = (before * sae.W_dec).sum(1, keepdim=True) * sae.W_dec
    assert torch.allclose(sae.W_dec.grad, before - parallel, atol=1e-6)


def test_provenance_given_in_metadata_moves_to_its_field():
    cfg = SAEConfig(4, 8, metadata={"hook_name": "blocks.0.hook_resid_post", "model_name": "m", "other": 1})
    assert (cfg.hook_name, cfg.model_name, cfg.metadata) == ("blocks.0.hook_resid_post", "m", {"other": 1})
    assert SAE(cfg).hook_name == "blocks.0.hook_resid_post"
    with pytest.raises(ValueError, match="hook_name='a' disagrees with metadata\\['hook_name'\\]='b'"):
        SAEConfig(4, 8, hook_name="a", metadata={"hook_name": "b"})
    with pytest.raises(ValueError, match="hook_name must be a non-empty string or None, got 3"):
        SAEConfig(4, 8, hook_name=3)


def test_an_sae_without_a_hook_says_how_to_give_one():
    with pytest.raises(ValueError, match=r"pass hook_name=\.\.\. to the call, or set sae.cfg.hook_name"):
        SAE(SAEConfig(4, 8)).hook_name


def test_architectures_are_the_literal_and_each_has_its_traits():
    from typing import get_args

    from saelab.sae import ARCHITECTURES, TRAITS, Architecture

    assert ARCHITECTURES == get_args(Architecture) == tuple(TRAITS) == ("relu", "topk", "jumprelu")
    assert [name for name, traits in TRAITS.items() if traits.top_k] == ["topk"]
    assert [name for name, traits in TRAITS.items() if traits.threshold] == ["jumprelu"]
    assert [SAEConfig(4, 8, name, k=2).normalize_decoder for name in ARCHITECTURES] == [False, True, True]
