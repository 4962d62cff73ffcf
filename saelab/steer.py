"""Steering generation with SAE features ("strategy 2"): clamp, add, or ablate a feature at its hook point.

Clamping follows Templeton et al. (2024): encode the activation x, set the chosen features to given values,
decode, and add back the SAE's error term x - SAE(x), so only the chosen features change. Because decoding is
linear, that is exactly

    x  ->  x + sum_f (value_f - f(x)) * W_dec[f]

(clamping a feature to its own current value changes nothing; clamping to 0 ablates it). It applies at every
position, prompt and generated tokens alike. Additive steering adds ``alpha * direction`` instead, with the
direction a decoder row or a contrastive mean difference of activations.

Every hook here is installed with ``model.hooks(...)``, which removes it on any exit — an exception or a
KeyboardInterrupt included — and leaves other (outer) hooks in place, so contexts nest.
"""

from __future__ import annotations

import contextlib
import math
from functools import partial
from typing import Iterator, Mapping, NamedTuple, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from saelab import lm
from saelab.features import check_feature
from saelab.splice import check_sae_fits_model
from saelab.harvest import collect_activations
from saelab.sae import SAE


def sae_hook_name(sae: SAE, hook_name: str | None = None) -> str:
    """The hook point the SAE reads: given, or recorded in its config (``metadata.hook_name``)."""
    name = hook_name or sae.cfg.metadata.get("hook_name")
    if name is None:
        raise ValueError("hook_name is needed: this SAE does not record the hook it was trained on")
    return name


def _checked_clamps(sae: SAE, clamps: Mapping[int, float]) -> tuple[Tensor, Tensor]:
    if not clamps:
        raise ValueError("clamps is empty: give {feature: value, ...}")
    for feature, value in clamps.items():
        check_feature(sae, feature)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"clamp value for feature {feature} must be a finite number, got {value!r}")
    ids = torch.tensor(list(clamps), dtype=torch.long)
    return ids, torch.tensor([float(v) for v in clamps.values()])


def clamp_hook(activation: Tensor, hook, sae: SAE, feature_ids: Tensor, values: Tensor) -> Tensor:
    """TransformerLens hook: set ``feature_ids`` to ``values`` in the SAE's code, keeping the error term."""
    current = sae.encode(activation.float())[..., feature_ids]
    directions = sae.W_dec[feature_ids].to(torch.float32)  # (n, d_model)
    change = (values.to(current.device) - current) @ directions
    return (activation.float() + change).to(activation.dtype)


def add_hook(activation: Tensor, hook, direction: Tensor, alpha: float) -> Tensor:
    """TransformerLens hook: add ``alpha * direction`` at every position."""
    return activation + alpha * direction.to(activation.device, activation.dtype)


@contextlib.contextmanager
def clamp(model, sae: SAE, clamps: Mapping[int, float], hook_name: str | None = None) -> Iterator[None]:
    """Within the block, every forward pass runs with the features in ``clamps`` held at their values.

        with steer.clamp(model, sae, {feature: 2.0 * max_activation}):
            print(lm.chat(model, "What is your physical form?"))
    """
    name = sae_hook_name(sae, hook_name)
    check_sae_fits_model(model, sae, name)
    ids, values = _checked_clamps(sae, clamps)
    with torch.no_grad(), model.hooks(fwd_hooks=[(name, partial(clamp_hook, sae=sae, feature_ids=ids,
                                                                values=values))]):
        yield


@contextlib.contextmanager
def add(model, hook_name: str, direction: Float[Tensor, " d_model"], alpha: float) -> Iterator[None]:
    """Within the block, ``alpha * direction`` is added to the activation at ``hook_name``."""
    if direction.ndim != 1 or direction.shape[0] != model.cfg.d_model:
        raise ValueError(f"direction must have shape (d_model={model.cfg.d_model},), got {tuple(direction.shape)}")
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    with torch.no_grad(), model.hooks(fwd_hooks=[(hook_name, partial(add_hook, direction=direction, alpha=alpha))]):
        yield


def contrastive_direction(model, hook_name: str, positive: Sequence[str], negative: Sequence[str]
                          ) -> Float[Tensor, " d_model"]:
    """Mean activation over the tokens of ``positive`` texts minus that over ``negative`` texts (BOS excluded).

    The baseline steering vector: no SAE, just the difference the concept makes on average.
    """
    if not positive or not negative:
        raise ValueError("positive and negative must each hold at least one text")

    def mean_activation(texts: Sequence[str]) -> Tensor:
        rows = [collect_activations(model, hook_name, model.to_tokens(text), progress=False).float()
                for text in texts]
        return torch.cat(rows).mean(0)

    return mean_activation(positive) - mean_activation(negative)


class Replies(NamedTuple):
    """The same prompt answered without and with steering."""

    baseline: str
    steered: str


def generate(
    model,
    prompt: str,
    *,
    sae: SAE | None = None,
    clamps: Mapping[int, float] | None = None,
    direction: Tensor | None = None,
    alpha: float = 0.0,
    hook_name: str | None = None,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int = 0,
) -> Replies:
    """Answer ``prompt`` (chat template applied) twice: unsteered, then steered by ``clamps`` (with ``sae``)
    or by ``alpha * direction`` at ``hook_name``. Same seed for both, so sampling differs only by the steering."""
    if (clamps is None) == (direction is None):
        raise ValueError("give either clamps (with sae) or direction (with alpha and hook_name), not both")
    ask = partial(lm.chat, model, prompt, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    baseline = ask()
    if clamps is not None:
        if sae is None:
            raise ValueError("clamps need the sae whose features they name")
        context = clamp(model, sae, clamps, hook_name)
    else:
        if hook_name is None:
            raise ValueError("additive steering needs hook_name")
        context = add(model, hook_name, direction, alpha)
    with context:
        steered = ask()
    return Replies(baseline, steered)
