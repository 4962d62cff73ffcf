"""Feature absorption on a first-letter task (Chanin et al. 2024, "A is for Absorption"), simplified.

The model knows which letter a word token starts with: a linear probe on the residual stream reads it. An SAE
usually gives the letter a latent ("starts with S"), but on some tokens that latent stays silent while a more
specific latent ("the word *said*") fires and carries the letter's direction in its decoder row: the specific
latent has *absorbed* the general one on that token.

The definition used here, on word tokens that start with the letter and that the probe classifies correctly:

- the **main latent** is the SAE latent that best detects the letter alone (highest F1 of "fires > 0");
- a token is **absorbed** when the main latent is silent (0) and, of the latents that fire, the one that adds
  most to the probe's logit, ``a_j * (W_dec[j] . w)``, is another latent whose decoder row has cosine at least
  ``threshold`` with the probe direction ``w``.

For a linear probe at the SAE's own layer, ``a_j * (W_dec[j] . w)`` is exactly what ablating latent ``j`` from
the reconstruction takes off the logit, the effect Chanin et al. measure by ablation. The **absorption rate** is
absorbed tokens over all letter tokens the probe gets right; the **miss rate** counts every token where the
main latent is silent, absorbed or not.
Shape letters: N tokens, D d_model, F d_sae.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

COSINE_THRESHOLD = 0.025
"""Chanin et al.'s minimum cosine between an absorbing latent's decoder row and the probe direction."""


def word_first_letters(tokenizer, token_ids: Tensor) -> list[str]:
    """For each token id: its lower-case first letter if the token is a word start (a space, then two or more
    ASCII letters, e.g. ``" said"``), else ``""``."""
    letters = {}
    out = []
    for token_id in token_ids.tolist():
        if token_id not in letters:
            text = tokenizer.decode([token_id])
            word = text[1:]
            is_word = text.startswith(" ") and len(word) >= 2 and word.isascii() and word.isalpha()
            letters[token_id] = word[0].lower() if is_word else ""
        out.append(letters[token_id])
    return out


class Probe(NamedTuple):
    weight: Tensor
    """(d_model,) the probe direction (not unit: the logit is ``x @ weight + bias``)."""
    bias: Tensor
    """() the offset of the logit."""


def train_probe(acts_ND: Tensor, labels_N: Tensor, *, steps: int = 300, lr: float = 0.05,
                weight_decay: float = 1e-4, seed: int = 0) -> Probe:
    """Logistic regression, full batch with Adam, on activations scaled to unit mean squared norm.

    The classes are weighted equally (a rare letter would otherwise be learnt as "never"); the returned probe
    reads raw activations (the scale is folded into its weight).
    """
    torch.manual_seed(seed)
    acts_ND = acts_ND.float()
    scale = 1.0 / acts_ND.pow(2).sum(-1).mean().sqrt()
    x_ND = acts_ND * scale
    y_N = labels_N.float()
    positive = y_N.mean().clamp(1e-6, 1 - 1e-6)
    weights_N = torch.where(y_N > 0, 0.5 / positive, 0.5 / (1 - positive))
    weight = torch.zeros(x_ND.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        logits_N = x_ND @ weight + bias
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits_N, y_N, reduction="none")
                * weights_N).mean() + weight_decay * weight.pow(2).sum()
        loss.backward()
        optimizer.step()
    return Probe((weight.detach() * scale), bias.detach())


def probe_logits(probe: Probe, acts_ND: Tensor) -> Tensor:
    return acts_ND.float() @ probe.weight + probe.bias


def f1_per_latent(codes_NF: Tensor, labels_N: Tensor) -> Tensor:
    """(d_sae,) F1 score of each latent used as a detector (fires > 0 means "yes") of ``labels_N``."""
    fires_NF = (codes_NF > 0).float()
    y_N = labels_N.float()
    true_pos_F = y_N @ fires_NF
    precision_F = true_pos_F / fires_NF.sum(0).clamp_min(1)
    recall_F = true_pos_F / y_N.sum().clamp_min(1)
    return 2 * precision_F * recall_F / (precision_F + recall_F).clamp_min(1e-12)


class Absorption(NamedTuple):
    main_latent: int
    """The latent that best detects the letter (highest F1)."""
    main_f1: float
    letter_tokens: int
    """Word tokens starting with the letter that the probe classifies correctly (the denominator)."""
    missed: Tensor
    """(N,) bools: letter tokens (probe right) on which the main latent is silent."""
    absorbed: Tensor
    """(N,) bools: missed tokens whose top probe contributor is another latent aligned with the probe."""
    absorber: Tensor
    """(N,) long: on absorbed tokens the absorbing latent, elsewhere -1."""

    @property
    def miss_rate(self) -> float:
        return float(self.missed.sum()) / max(self.letter_tokens, 1)

    @property
    def absorption_rate(self) -> float:
        return float(self.absorbed.sum()) / max(self.letter_tokens, 1)


def absorption(codes_NF: Tensor, W_dec_FD: Tensor, probe: Probe, acts_ND: Tensor, labels_N: Tensor,
               *, main_latent: int | None = None, threshold: float = COSINE_THRESHOLD) -> Absorption:
    """Measure absorption of the probe's letter in one SAE (see the module docstring for the definition).

    codes_NF: the SAE's latent activations on the tokens; acts_ND: the activations they encode (for the
    probe's verdict); labels_N: True where the token is a word starting with the letter.
    """
    labels_N = labels_N.bool()
    if main_latent is None:
        f1_F = f1_per_latent(codes_NF, labels_N)
        main_latent = int(f1_F.argmax())
        main_f1 = float(f1_F[main_latent])
    else:
        main_f1 = float(f1_per_latent(codes_NF[:, [main_latent]], labels_N)[0])
    counted_N = labels_N & (probe_logits(probe, acts_ND) > 0)
    missed_N = counted_N & (codes_NF[:, main_latent] <= 0)
    direction_D = probe.weight / probe.weight.norm()
    cosine_F = (W_dec_FD / W_dec_FD.norm(dim=1, keepdim=True)) @ direction_D
    contribution_NF = codes_NF * (W_dec_FD @ probe.weight)
    top_contribution_N, top_latent_N = contribution_NF.max(dim=1)
    absorbed_N = (missed_N & (top_contribution_N > 0) & (top_latent_N != main_latent)
                  & (cosine_F[top_latent_N] >= threshold))
    absorber_N = torch.where(absorbed_N, top_latent_N, torch.full_like(top_latent_N, -1))
    return Absorption(main_latent, main_f1, int(counted_N.sum()), missed_N, absorbed_N, absorber_N)


def decoder_cosines(W_dec_a: Tensor, W_dec_b: Tensor) -> Tensor:
    """(d_sae_a, d_sae_b) cosine between every decoder row of one SAE and every decoder row of another."""
    a = W_dec_a / W_dec_a.norm(dim=1, keepdim=True)
    b = W_dec_b / W_dec_b.norm(dim=1, keepdim=True)
    return a @ b.t()
