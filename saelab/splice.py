"""The SAE inside the model: replace a hook point's activation by the SAE's reconstruction, and measure the cost.

``ce_loss_recovered`` is the standard end-to-end check of an SAE: next-token loss with the reconstruction
spliced in, against the clean model and against the activation zeroed out,

    recovered = (L_zero - L_sae) / (L_zero - L_clean)

1.0 means the model cannot tell the reconstruction from the real activation; 0.0 means it is as useless as
deleting the activation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from saelab import deprecated
from saelab.harvest import check_tokens
from saelab.sae import SAE


def check_sae_width(model, sae: SAE) -> None:
    """Deprecated: ``sae.check_width(model)``."""
    deprecated.warn("splice.check_sae_width(model, sae)", "sae.check_width(model)", stacklevel=3)
    sae.check_width(model)


def check_sae_fits_model(model, sae: SAE, hook_name: str | None = None) -> None:
    """Deprecated: ``sae.check_fits(model)`` (``hook_name=`` to check another hook point)."""
    deprecated.warn("splice.check_sae_fits_model(model, sae, hook_name)", "sae.check_fits(model)", stacklevel=3)
    sae.check_fits(model, hook_name)


def reconstruct_hook(activation: Tensor, hook, sae: SAE, skip_positions: int = 1) -> Tensor:
    """TransformerLens hook: replace the activation by ``sae(activation)``'s reconstruction.

    The first ``skip_positions`` positions keep their real activation: position 0 is the attention sink, an
    outlier the SAE never saw in training (harvesting drops it), and scoring it would measure nothing useful.
    """
    reconstruction = sae.decode(sae.encode(activation.float())).to(activation.dtype)
    reconstruction[:, :skip_positions] = activation[:, :skip_positions]
    return reconstruction


def zero_hook(activation: Tensor, hook, skip_positions: int = 1) -> Tensor:
    zeroed = torch.zeros_like(activation)
    zeroed[:, :skip_positions] = activation[:, :skip_positions]
    return zeroed


@dataclass
class SpliceLoss:
    """Mean next-token loss (nats) of the clean model, with the SAE spliced in, and with the activation zeroed."""

    clean: float
    spliced: float
    zero_ablated: float

    @property
    def recovered(self) -> float:
        return (self.zero_ablated - self.spliced) / (self.zero_ablated - self.clean)

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "ce_loss_recovered": self.recovered}


def ce_loss_recovered(
    model,
    sae: SAE,
    tokens: Int[Tensor, "batch pos"],
    *old_shape,
    hook_name: str | None = None,
    batch_size: int = 8,
    skip_positions: int = 1,
    progress: bool = True,
) -> SpliceLoss:
    """Next-token loss three ways over ``tokens``, the SAE spliced in at its hook (or ``hook_name``); see the
    module docstring."""
    (tokens,), hook_name = deprecated.hook_first("splice.ce_loss_recovered(model, sae, tokens)",
                                                 (tokens, *old_shape), hook_name, old=isinstance(tokens, str), takes=1)
    check_tokens(model, tokens)
    hook_name = sae.check_fits(model, hook_name)
    variants = {
        "clean": [],
        "spliced": [(hook_name, partial(reconstruct_hook, sae=sae, skip_positions=skip_positions))],
        "zero_ablated": [(hook_name, partial(zero_hook, skip_positions=skip_positions))],
    }
    totals = dict.fromkeys(variants, 0.0)
    bar = tqdm(total=tokens.shape[0] * len(variants), desc="CE loss recovered", disable=not progress)
    with torch.inference_mode():
        for start in range(0, tokens.shape[0], batch_size):
            batch = tokens[start:start + batch_size].to(model.cfg.device)
            for name, hooks in variants.items():
                loss = model.run_with_hooks(batch, fwd_hooks=hooks, return_type="loss")
                totals[name] += loss.item() * batch.shape[0]
                bar.update(batch.shape[0])
    bar.close()
    return SpliceLoss(**{name: total / tokens.shape[0] for name, total in totals.items()})
