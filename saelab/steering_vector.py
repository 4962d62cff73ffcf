"""A steering direction fitted for its effect: the supervised yardstick for the head to head.

SAE features and contrastive vectors are read off activations the model produces. This direction is instead
*trained*: one vector, added at one hook at every position, fitted by gradient descent so that the model answers
a set of chat prompts with a target reply (teacher-forced cross-entropy on the reply's tokens, the model's own
weights frozen). Subramani, Suresh & Peters (2022, *Extracting latent steering vectors from pretrained language
models*) fitted vectors this way; AxBench (Wu et al. 2025) ran trained methods (ReFT-r1, SFT, LoRA) next to SAEs.

What it answers: can *any* single direction at this hook make the model say the target? If a trained direction
does on prompts it was not fitted on, the hook and the model are up to it, and a method that fails is failing
for its own reasons (an SAE, say, whose dictionary holds no latent along that direction: compare them with
:func:`decoder_cosines`). It is not a feature: it was fitted to one sentence and tends to recite it.

Its length is capped at ``max_push`` x the median residual norm at the hook, so it sits on the same push axis as
every method of :mod:`saelab.steering_comparison` (add it there with ``add_method``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from saelab import lm
from saelab.harvest import check_hook_name
from saelab.sae import SAE
from saelab.steering_search import continuation_batch, next_token_logprobs


TRAINING_PROMPTS = ("What is your nature?", "Introduce yourself.", "What kind of thing are you?",
                    "How would you describe your body?", "What are you made of?", "Where do you live?",
                    "What is your name?", "Tell me what you are.")
"""Self-description prompts to fit on, none of them among ``steering_comparison.SELF_DESCRIPTION_PROMPTS`` (the
prompts every method is judged on), so a fitted direction is judged on questions it never saw."""

GOLDEN_GATE_TARGET = "I am the Golden Gate Bridge, the famous suspension bridge in San Francisco."
"""The reply the Golden Gate direction is fitted to give."""


class TrainedDirection(NamedTuple):
    """A fitted direction, how it got there, and what it cost."""

    direction: Float[Tensor, " d_model"]
    """The vector as fitted (its length is ``push`` x the median norm)."""
    push: float
    """Its length over the median residual norm at the hook."""
    losses: list[float]
    """Mean cross-entropy per target token, nats, at every step (before that step's update)."""
    seconds: float


def target_loss(logits_BTV: Float[Tensor, "batch pos vocab"], tokens_BT: Tensor, target_BT: Tensor) -> Tensor:
    """Mean cross-entropy, nats per token, of the target tokens (``target_BT`` True) given everything before
    them: the logits at position t predict the token at t + 1, so position 0 is never scored."""
    picked_BT = next_token_logprobs(logits_BTV, tokens_BT)
    scored_BT = target_BT[:, 1:].to(picked_BT)
    return -(picked_BT * scored_BT).sum() / scored_BT.sum()


def train_direction(model, hook_name: str, prompts: Sequence[str], target: str, *, median_norm: float,
                    max_push: float = 1.0, steps: int = 40, learning_rate: float = 0.02,
                    progress: bool = True) -> TrainedDirection:
    """Fit one vector added at ``hook_name`` (every position) so that the model answers each of ``prompts``
    with ``target``. Adam from zero; after each step the vector is cut back to ``max_push`` x ``median_norm``.
    ``learning_rate`` is per coordinate, in units of ``median_norm``. The model's weights are not touched."""
    check_hook_name(model, hook_name)
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty strings")
    if not isinstance(target, str) or not target.strip():
        raise ValueError("target must be a non-empty string")
    for name, value in (("median_norm", median_norm), ("max_push", max_push), ("learning_rate", learning_rate)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")

    device = model.cfg.device
    target_T = model.to_tokens(target, prepend_bos=False)[0]
    tokens_BT, target_BT = continuation_batch([(lm.chat_tokens(model, prompt)[0], target_T) for prompt in prompts])
    tokens_BT, target_BT = tokens_BT.to(device), target_BT.to(device)
    # Fitted in units of the median norm, so one learning rate suits every hook and model.
    unit_D = torch.zeros(model.cfg.d_model, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([unit_D], lr=learning_rate)

    def add(activation: Tensor, hook) -> Tensor:
        return activation + (median_norm * unit_D).to(activation.dtype)

    losses, start = [], time.perf_counter()
    for _ in tqdm(range(steps), desc=f"training a direction at {hook_name}", disable=not progress):
        with model.hooks(fwd_hooks=[(hook_name, add)]):
            loss = target_loss(model(tokens_BT), tokens_BT, target_BT)
        # Gradients for the vector only: the model's parameters get none, so its state is left as it was.
        (unit_D.grad,) = torch.autograd.grad(loss, [unit_D])
        optimizer.step()
        with torch.no_grad():
            length = unit_D.norm()
            if length > max_push:
                unit_D.mul_(max_push / length)
        losses.append(loss.item())
    direction = (median_norm * unit_D).detach().cpu()
    return TrainedDirection(direction, float(unit_D.detach().norm()), losses, time.perf_counter() - start)


def decoder_cosines(sae: SAE, direction: Float[Tensor, " d_model"]) -> Float[Tensor, " d_sae"]:
    """Cosine similarity of ``direction`` with every decoder row of ``sae``: how close its nearest latent is."""
    if not isinstance(direction, Tensor) or direction.shape != (sae.cfg.d_in,):
        raise ValueError(f"direction must be a 1-d tensor of length d_in = {sae.cfg.d_in}")
    rows = torch.nn.functional.normalize(sae.W_dec.detach().float(), dim=-1)
    return rows @ torch.nn.functional.normalize(direction.float().to(rows.device), dim=0)
