"""One text, token by token: its activations at a hook point and how well each of several SAEs rebuilds them.

``reconstruct_text`` runs the text to the hook point (BOS prepended, then dropped, as in the harvest) and encodes
every token with each SAE; a token's FVU is ``||x - x_hat||^2 / ||x - centre||^2`` (summed over a corpus and
divided, these give the corpus FVU). ``saelab.widgets.reconstruction`` draws the answer.

Shape letters: P positions (BOS dropped), D d_model, F d_sae.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from saelab.harvest import collect_activations
from saelab.sae import SAE

N_TOP_LATENTS = 8


@dataclass
class TextReconstruction:
    """One text's activations at a hook point and what each SAE made of them (position 0 dropped)."""

    text: str
    tokens: list[str]
    """The token strings, one per kept position."""
    activations: Float[Tensor, "pos d_model"]
    reconstructions: dict[str, Float[Tensor, "pos d_model"]]
    codes: dict[str, Float[Tensor, "pos d_sae"]]
    token_fvu: dict[str, Float[Tensor, " pos"]]
    """Per token: ||x - x_hat||^2 / ||x - centre||^2 (their sum over a corpus, divided, is the FVU)."""

    def top_latents(self, name: str, position: int, n: int = N_TOP_LATENTS) -> tuple[list[int], list[float]]:
        """The ``n`` strongest latents of SAE ``name`` at ``position`` (only those that fire)."""
        values, ids = self.codes[name][position].topk(min(n, self.codes[name].shape[1]))
        firing = values > 0
        return ids[firing].tolist(), values[firing].tolist()


@torch.no_grad()
def reconstruct_text(model, saes: Mapping[str, SAE], hook_name: str, text: str,
                     centre: Float[Tensor, " d_model"]) -> TextReconstruction:
    """Encode every token of ``text`` (BOS prepended, then dropped) with each SAE in ``saes`` ({name: SAE}).

    ``centre`` is the mean activation of a corpus (the reference for a token's FVU).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    if not saes:
        raise ValueError("saes is empty: give at least one {name: SAE}")
    for sae in saes.values():
        sae.check_fits(model, hook_name)
    if centre.shape != (model.cfg.d_model,):
        raise ValueError(f"centre must have shape (d_model={model.cfg.d_model},), got {tuple(centre.shape)}")
    tokens = model.to_tokens(text)  # BOS first, as in the harvest
    if tokens.shape[1] < 2:
        raise ValueError("text is too short: it needs at least one token after BOS")
    x_PD = collect_activations(model, hook_name, tokens, progress=False).float()
    labels = model.to_str_tokens(tokens[0])[1:]
    spread_P = (x_PD - centre.float()).pow(2).sum(-1).clamp_min(1e-12)
    recons, codes, fvu = {}, {}, {}
    for name, sae in saes.items():
        codes[name] = sae.encode(x_PD)
        recons[name] = sae.decode(codes[name])
        fvu[name] = (x_PD - recons[name]).pow(2).sum(-1) / spread_P
    return TextReconstruction(text, list(labels), x_PD, recons, codes, fvu)
