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

from saelab.harvest import check_hook_name, check_tokens
from saelab.sae import SAE


def check_sae_width(model, sae: SAE) -> None:
    if sae.cfg.d_in != model.cfg.d_model:
        raise ValueError(f"the SAE reads d_in={sae.cfg.d_in} but the model's d_model is {model.cfg.d_model}: "
                         "it was trained on another model")


def check_sae_fits_model(model, sae: SAE, hook_name: str) -> None:
    """Refuse an SAE trained for another width or another hook point, naming both sides."""
    check_hook_name(model, hook_name)
    check_sae_width(model, sae)
    trained_on = sae.cfg.metadata.get("hook_name")
    if trained_on is not None and trained_on != hook_name:
        raise ValueError(f"the SAE was trained on {trained_on!r}, not on hook_name={hook_name!r}")


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
    hook_name: str,
    tokens: Int[Tensor, "batch pos"],
    *,
    batch_size: int = 8,
    skip_positions: int = 1,
    progress: bool = True,
) -> SpliceLoss:
    """Next-token loss three ways over ``tokens``; see the module docstring."""
    check_tokens(model, tokens)
    check_sae_fits_model(model, sae, hook_name)
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
