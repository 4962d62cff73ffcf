"""Lesson 04's widgets, driven without a browser: move a slider, check the figure changed accordingly."""

import pytest
import torch

from saelab.exercises import lesson04
from saelab.harvest import most_selective_neurons, neuron_top_contexts
from saelab.widgets.neurons import neuron_picker
from saelab.widgets.residual_norms import residual_norms_explorer


@pytest.fixture(scope="module")
def prompt(tiny_model):
    tokens = tiny_model.to_tokens("The quick brown fox jumps over the lazy dog.")
    _, cache = tiny_model.run_with_cache(tokens)
    return tokens, tiny_model.to_str_tokens(tokens[0]), cache


def test_layer_slider_redraws_the_per_token_bars(tiny_model, prompt):
    tokens, labels, cache = prompt
    norms = lesson04.reference_residual_norms(cache, tiny_model.cfg.n_layers)
    widget = residual_norms_explorer(norms, labels, layer=1)
    bars = widget.figure.data[-1]
    assert list(bars.y) == pytest.approx(norms[1].tolist())
    widget.layer.value = 4
    assert list(widget.figure.data[-1].y) == pytest.approx(norms[4].tolist())
    assert list(widget.figure.data[-2].x) == [4, 4]
    assert "after <b>4</b> blocks" in widget.status.value
    assert widget.layer.max == tiny_model.cfg.n_layers


def test_residual_norms_figure_rejects_bad_layers(prompt, tiny_model):
    from saelab.plots.lm import residual_norms_figure

    _, labels, cache = prompt
    norms = lesson04.reference_residual_norms(cache, tiny_model.cfg.n_layers)
    with pytest.raises(ValueError, match="layer must be in 0..4"):
        residual_norms_figure(norms, labels, 9)


def test_top_contexts_bracket_the_strongest_token(tiny_model):
    tokens = torch.tensor([[1, 40, 41, 42, 43], [1, 44, 45, 46, 47]])
    acts = torch.zeros(8, 3)  # 2 rows x 4 positions (BOS dropped)
    acts[6, 2] = 5.0  # row 1, position 3 -> token 46
    acts[1, 2] = 2.0  # row 0, position 2 -> token 41
    top = neuron_top_contexts(acts, tokens, 2, tiny_model.tokenizer, k=2, before=1, after=1)
    assert top.activations == [5.0, 2.0]
    assert top.flat_index == [1 * 5 + 3, 0 * 5 + 2]
    decode = tiny_model.tokenizer.decode
    assert top.contexts[0] == decode([45]) + "[" + decode([46]) + "]" + decode([47])
    with pytest.raises(ValueError, match="neuron must be in 0..2"):
        neuron_top_contexts(acts, tokens, 3, tiny_model.tokenizer)


def test_neuron_slider_redraws_its_top_tokens(tiny_model):
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, 250, (6, 9), generator=generator)
    tokens[:, 0] = 1
    acts = torch.randn(6 * 8, 5, generator=generator)
    widget = neuron_picker(acts, tokens, tiny_model.tokenizer, neuron=0, k=4)
    assert list(widget.figure.data[0].x) == pytest.approx(acts[:, 0].topk(4).values.flip(0).tolist())
    widget.neuron.value = 3
    assert list(widget.figure.data[0].x) == pytest.approx(acts[:, 3].topk(4).values.flip(0).tolist())
    assert "neuron 3" in widget.figure.layout.title.text
    widget.k.value = 7
    assert len(widget.figure.data[0].x) == 7


def test_most_selective_neurons_finds_the_spiky_one():
    acts = torch.randn(500, 10, generator=torch.Generator().manual_seed(1))
    acts[123, 7] = 40.0
    assert most_selective_neurons(acts, 1) == [7]


def test_the_neuron_functions_imported_from_the_widget_still_work_but_warn(tiny_model):
    from saelab.widgets import neurons

    acts = torch.randn(500, 10, generator=torch.Generator().manual_seed(1))
    acts[123, 7] = 40.0
    with pytest.warns(DeprecationWarning, match="saelab.harvest.most_selective_neurons"):
        assert neurons.most_selective_neurons(acts, 1) == [7]
    tokens = torch.randint(3, 250, (50, 11), generator=torch.Generator().manual_seed(2))
    with pytest.warns(DeprecationWarning, match="saelab.harvest.neuron_top_contexts"):
        from saelab.widgets.neurons import top_contexts
    assert top_contexts(acts, tokens, 7, tiny_model.tokenizer, k=3) == neuron_top_contexts(
        acts, tokens, 7, tiny_model.tokenizer, k=3)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = neurons.nothing_here
