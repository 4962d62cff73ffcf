"""The token reconstruction explorer, driven without a browser on a tiny random model and hand-made SAEs."""

import pytest
import torch

from saelab.harvest import collect_activations
from saelab.reconstruction import reconstruct_text
from saelab.sae import SAE, SAEConfig
from saelab.widgets.reconstruction import reconstruction_explorer, reconstruction_figure

HOOK = "blocks.1.hook_resid_post"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "What is your physical form?"]


@pytest.fixture(scope="module")
def saes(tiny_model):
    d = tiny_model.cfg.d_model
    narrow = SAE(SAEConfig(d, 64, "topk", k=2, hook_name=HOOK), seed=0)
    wide = SAE(SAEConfig(d, 128, "topk", k=8, hook_name=HOOK), seed=1)
    with torch.no_grad():  # an exact SAE: +-e_i latents rebuild any vector with 2 d latents of 2 d
        exact = SAE(SAEConfig(d, 2 * d, "topk", k=2 * d, hook_name=HOOK), seed=0)
        eye = torch.eye(d)
        exact.W_enc.copy_(torch.cat([eye, -eye], 1))
        exact.W_dec.copy_(torch.cat([eye, -eye], 0))
        exact.b_enc.zero_()
        exact.b_dec.zero_()
    return {"narrow": narrow, "wide": wide, "exact": exact}


def test_reconstruct_text_matches_the_harvest_and_the_saes(tiny_model, saes):
    centre = torch.zeros(tiny_model.cfg.d_model)
    result = reconstruct_text(tiny_model, saes, HOOK, TEXTS[0], centre)
    tokens = tiny_model.to_tokens(TEXTS[0])
    x = collect_activations(tiny_model, HOOK, tokens, progress=False)
    assert torch.allclose(result.activations, x)
    assert result.tokens == tiny_model.to_str_tokens(tokens[0])[1:]  # BOS dropped, as in the harvest
    narrow = saes["narrow"]
    assert torch.allclose(result.reconstructions["narrow"], narrow.decode(narrow.encode(x)), atol=1e-5)
    expected = (x - narrow.decode(narrow.encode(x))).pow(2).sum(-1) / x.pow(2).sum(-1)
    assert torch.allclose(result.token_fvu["narrow"], expected, atol=1e-5)
    assert result.token_fvu["exact"].max() < 1e-8  # the exact SAE rebuilds every token
    assert (result.codes["narrow"] > 0).sum(-1).max() <= 2
    _, values = result.top_latents("wide", 3)
    assert values == sorted(values, reverse=True) and all(v > 0 for v in values)
    assert values[0] == pytest.approx(float(result.codes["wide"][3].max()))


def test_token_slider_moves_every_panel(tiny_model, saes):
    centre = torch.randn(tiny_model.cfg.d_model)
    widget = reconstruction_explorer(tiny_model, saes, HOOK, TEXTS, centre, position=1)
    result = widget.result
    scatter = widget.figure.data[3]  # after one FVU bar trace per SAE: the first SAE's x vs x_hat
    assert list(scatter.x) == pytest.approx(result.activations[1].tolist())
    assert list(widget.figure.data[0].marker.opacity)[1] == 1.0
    widget.position.value = 4
    assert list(widget.figure.data[3].x) == pytest.approx(result.activations[4].tolist())
    assert list(widget.figure.data[3].y) == pytest.approx(result.reconstructions["narrow"][4].tolist())
    assert list(widget.figure.data[0].marker.opacity)[4] == 1.0
    assert list(widget.figure.data[0].marker.opacity)[1] == pytest.approx(0.35)
    _, values = result.top_latents("wide", 4)
    wide_bars = widget.figure.data[-2]
    assert list(wide_bars.x) == pytest.approx(values[::-1])
    assert f"token 4 <b>{result.tokens[4]!r}</b>" in widget.status.value
    assert "token 4" in widget.figure.layout.annotations[1].text
    assert widget.figure.layout.shapes[0].x0 == pytest.approx(3.5)


def test_changing_the_text_re_encodes_and_keeps_the_slider_in_range(tiny_model, saes):
    widget = reconstruction_explorer(tiny_model, saes, HOOK, TEXTS, torch.zeros(tiny_model.cfg.d_model))
    widget.position.value = widget.position.max
    widget.text.value = TEXTS[1]
    n = len(tiny_model.to_str_tokens(tiny_model.to_tokens(TEXTS[1])[0])) - 1
    assert widget.position.max == n - 1 and widget.position.value <= n - 1
    assert len(widget.figure.data[0].x) == n
    widget.own_text.value = "a cat"
    assert widget.result.text == "a cat"
    assert len(widget.figure.data[0].x) == len(widget.result.tokens)


def test_bad_input_is_named(tiny_model, saes):
    centre = torch.zeros(tiny_model.cfg.d_model)
    with pytest.raises(ValueError, match="text must be a non-empty string"):
        reconstruct_text(tiny_model, saes, HOOK, "  ", centre)
    with pytest.raises(ValueError, match="centre must have shape"):
        reconstruct_text(tiny_model, saes, HOOK, TEXTS[0], torch.zeros(3))
    with pytest.raises(ValueError, match="trained on 'blocks.1.hook_resid_post'"):
        reconstruct_text(tiny_model, saes, "blocks.2.hook_resid_post", TEXTS[0], centre)
    result = reconstruct_text(tiny_model, saes, HOOK, TEXTS[0], centre)
    with pytest.raises(ValueError, match="position must be in 0.."):
        reconstruction_figure(result, len(result.tokens))
    with pytest.raises(ValueError, match="texts is empty"):
        reconstruction_explorer(tiny_model, saes, HOOK, [], centre)


def test_sae_comparison_draws_one_bar_per_sae_in_each_metric_panel():
    from saelab.plots.sae import sae_comparison

    rows = [dict(name="yours", fvu=0.3, ce_loss_recovered=0.95, dead_fraction=0.01),
            dict(name="shipped", fvu=0.17, ce_loss_recovered=0.99, dead_fraction=0.0)]
    fig = sae_comparison(rows)
    assert [list(trace.y) for trace in fig.data] == [[0.3, 0.17], [0.95, 0.99], [0.01, 0.0]]
    assert all(list(trace.x) == ["yours", "shipped"] for trace in fig.data)
    assert [a.text for a in fig.layout.annotations][1] == "CE loss recovered (higher is better)"


def test_reconstruct_text_from_the_widget_module_still_works_but_warns(tiny_model, saes):
    centre = torch.zeros(tiny_model.cfg.d_model)
    with pytest.warns(DeprecationWarning, match="saelab.reconstruction.reconstruct_text"):
        from saelab.widgets.reconstruction import reconstruct_text as old_reconstruct_text
    old = old_reconstruct_text(tiny_model, saes, HOOK, TEXTS[1], centre)
    new = reconstruct_text(tiny_model, saes, HOOK, TEXTS[1], centre)
    assert old.tokens == new.tokens and all(torch.equal(old.token_fvu[n], new.token_fvu[n]) for n in saes)
