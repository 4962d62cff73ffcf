"""Splicing an SAE into the model: a perfect SAE recovers all the loss, a random one does not."""

import pytest
import torch

from saelab import splice
from saelab.corpus import tokenize_corpus
from saelab.sae import SAE, SAEConfig

HOOK = "blocks.1.hook_resid_post"


def identity_sae(d: int) -> SAE:
    """relu(x) - relu(-x) = x: a two-sided SAE that reconstructs every input exactly."""
    sae = SAE(SAEConfig(d_in=d, d_sae=2 * d, architecture="relu"), seed=0)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


@pytest.fixture(scope="module")
def tokens(tiny_model, tiny_texts):
    return tokenize_corpus(tiny_model, tiny_texts, seq_len=16)


def test_a_perfect_reconstruction_changes_nothing_and_no_hook_stays_behind(tiny_model, tokens):
    result = splice.ce_loss_recovered(tiny_model, identity_sae(32), tokens, hook_name=HOOK, batch_size=3,
                                      progress=False)
    assert result.spliced == pytest.approx(result.clean, abs=1e-4)
    assert result.zero_ablated != pytest.approx(result.clean, abs=1e-4)
    clean = tiny_model(tokens, return_type="loss").item()  # hooks gone: a plain call gives the clean loss
    assert clean == pytest.approx(result.clean, abs=1e-4)


@pytest.mark.slow
def test_on_the_real_model_a_perfect_sae_recovers_all_and_a_random_one_little(real_model, tiny_texts):
    tokens = tokenize_corpus(real_model, tiny_texts, seq_len=24)[:4]
    hook = "blocks.15.hook_resid_post"
    perfect = splice.ce_loss_recovered(real_model, identity_sae(576), tokens, hook_name=hook, progress=False)
    assert perfect.zero_ablated > perfect.clean + 1.0  # deleting a middle layer's residual stream hurts
    assert perfect.recovered == pytest.approx(1.0, abs=1e-3)
    assert perfect.as_dict()["ce_loss_recovered"] == perfect.recovered
    random = SAE(SAEConfig(d_in=576, d_sae=1152, architecture="topk", k=8), seed=0)
    assert splice.ce_loss_recovered(real_model, random, tokens, hook_name=hook, progress=False).recovered < 0.5


def test_zeroing_keeps_the_attention_sink_position():
    activation = torch.randn(2, 5, 4)
    zeroed = splice.zero_hook(activation, None)
    assert torch.equal(zeroed[:, 0], activation[:, 0]) and (zeroed[:, 1:] == 0).all()


def test_an_sae_of_the_wrong_width_is_refused(tiny_model, tokens):
    with pytest.raises(ValueError, match="d_in=16 but the model's d_model is 32"):
        splice.ce_loss_recovered(tiny_model, SAE(SAEConfig(d_in=16, d_sae=8), seed=0), tokens, hook_name=HOOK)


def test_check_fits_names_the_argument_and_the_old_check_warns_with_the_same_error(tiny_model, tokens):
    sae = identity_sae(32)
    with pytest.raises(ValueError) as error:
        sae.check_fits(tiny_model)
    assert str(error.value) == ("this SAE does not record the hook point it reads: pass hook_name=... to the call, "
                                "or set sae.cfg.hook_name")
    sae.cfg.hook_name = HOOK
    assert sae.check_fits(tiny_model) == HOOK
    message = "the SAE was trained on 'blocks.1.hook_resid_post', not on hook_name='blocks.2.hook_resid_post'"
    with pytest.raises(ValueError, match=message):
        sae.check_fits(tiny_model, "blocks.2.hook_resid_post")
    with pytest.warns(DeprecationWarning, match=r"sae.check_fits\(model\)"), pytest.raises(ValueError, match=message):
        splice.check_sae_fits_model(tiny_model, sae, "blocks.2.hook_resid_post")
    with pytest.warns(DeprecationWarning):
        assert splice.check_sae_fits_model(tiny_model, sae, HOOK) is None
    # The old ce_loss_recovered(model, sae, hook_name, tokens) warns and gives the same numbers.
    new = splice.ce_loss_recovered(tiny_model, sae, tokens[:3], progress=False)
    with pytest.warns(DeprecationWarning, match=r"splice.ce_loss_recovered\(model, sae, tokens\)"):
        old = splice.ce_loss_recovered(tiny_model, sae, HOOK, tokens[:3], progress=False)
    assert old == new
