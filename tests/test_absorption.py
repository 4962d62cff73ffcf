"""saelab.absorption: word first letters, the probe, latents' F1 and the absorption measurement."""

import torch

from saelab import absorption

VOCAB = {0: " said", 1: " Sun", 2: "s", 3: " s", 4: " 12", 5: " Über", 6: "said", 7: " apple"}


class _Tokenizer:
    def decode(self, ids):
        return "".join(VOCAB[i] for i in ids)


def test_word_first_letters_keeps_only_word_starts():
    assert absorption.word_first_letters(_Tokenizer(), torch.arange(8)) == ["s", "s", "", "", "", "", "", "a"]


def test_probe_separates_a_linear_label():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(400, 8, generator=g) * 50
    labels = acts[:, 2] > 30  # rare positives, raw-scale activations
    probe = absorption.train_probe(acts, labels, steps=400)
    accuracy = ((absorption.probe_logits(probe, acts) > 0) == labels).float().mean()
    assert accuracy > 0.95
    assert probe.weight.abs().argmax() == 2


def test_f1_per_latent_perfect_dead_and_partial():
    labels = torch.tensor([True, True, False, False])
    codes = torch.tensor([[1.0, 0.0, 1.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(absorption.f1_per_latent(codes, labels), torch.tensor([1.0, 0.0, 0.5]))


def test_absorption_counts_a_silent_main_latent_replaced_by_an_aligned_one():
    # Latent 0: the letter; latent 1: one word that carries the letter; latent 2: unrelated.
    W_dec = torch.tensor([[1.0, 0.0, 0.0], [0.7, 0.7, 0.0], [0.0, 0.0, 1.0]])
    probe = absorption.Probe(torch.tensor([1.0, 0.0, 0.0]), torch.tensor(-0.3))
    codes = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 1.0]])
    acts = codes @ W_dec + torch.tensor([[0.0, 0.0, 0.0]] * 3 + [[0.5, 0.0, 0.0]] + [[0.0, 0.0, 0.0]])
    labels = torch.tensor([True, True, True, True, False])
    result = absorption.absorption(codes, W_dec, probe, acts, labels)
    assert result.main_latent == 0
    assert result.letter_tokens == 4
    assert result.missed.tolist() == [False, False, True, True, False]
    assert result.absorbed.tolist() == [False, False, True, False, False]
    assert result.absorber.tolist() == [-1, -1, 1, -1, -1]
    assert result.miss_rate == 0.5 and result.absorption_rate == 0.25


def test_decoder_cosines_of_scaled_rows():
    a = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0]])
    assert torch.allclose(absorption.decoder_cosines(a, b), torch.full((2, 1), 2 ** -0.5))
