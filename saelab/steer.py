"""Steering generation with SAE features ("strategy 2"): clamp, add, or ablate a feature at its hook point.

Clamping follows Templeton et al. (2024): encode the activation x, set the chosen features to given values,
decode, and add back the SAE's error term x - SAE(x), so only the chosen features change. Because decoding is
linear, that is exactly

    x  ->  x + sum_f (value_f - f(x)) * W_dec[f]

(clamping a feature to its own current value changes nothing; clamping to 0 ablates it). It applies at every
position, prompt and generated tokens alike. Additive steering adds ``alpha * direction`` instead, with the
direction a decoder row or a contrastive mean difference of activations.

``generate_replies`` returns a baseline and a steered reply; ``stream_replies`` yields the same two replies token by
token, side by side, for live display (built on :mod:`saelab.streaming`).

Every hook here is installed with ``model.hooks(...)``, which removes it on any exit — an exception or a
KeyboardInterrupt included — and leaves other (outer) hooks in place, so contexts nest.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from functools import partial
from typing import Iterator, Mapping, NamedTuple, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from saelab import deprecated, lm, streaming
from saelab.harvest import check_hook_name, collect_activations
from saelab.sae import SAE
from saelab.streaming import StreamedToken


def _checked_clamps(sae: SAE, clamps: Mapping[int, float]) -> tuple[Tensor, Tensor]:
    if not clamps:
        raise ValueError("clamps is empty: give {feature: value, ...}")
    for feature, value in clamps.items():
        sae.check_feature(feature)
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
def clamp(model, sae: SAE, clamps: Mapping[int, float], *old_shape, hook_name: str | None = None
          ) -> Iterator[None]:
    """Within the block, every forward pass runs with the features in ``clamps`` held at their values.

        with steer.clamp(model, sae, {feature: 2.0 * max_activation}):
            print(lm.chat(model, "What is your physical form?"))
    """
    hook_name = deprecated.positional_hook("steer.clamp(model, sae, clamps)", old_shape, hook_name)
    with torch.no_grad(), model.hooks(fwd_hooks=clamp_hooks(model, sae, clamps, hook_name=hook_name)):
        yield


def clamp_hooks(model, sae: SAE, clamps: Mapping[int, float], *old_shape, hook_name: str | None = None
                ) -> list[lm.Hook]:
    """The checked ``(hook_name, fn)`` pair that :func:`clamp` installs, for ``run_with_hooks``, ``lm.generate``
    or a stream (``streaming.stream_generate(..., fwd_hooks=...)``); at the SAE's hook unless ``hook_name``."""
    hook_name = deprecated.positional_hook("steer.clamp_hooks(model, sae, clamps)", old_shape, hook_name)
    name = sae.check_fits(model, hook_name)
    ids, values = _checked_clamps(sae, clamps)
    return [(name, partial(clamp_hook, sae=sae, feature_ids=ids, values=values))]


@contextlib.contextmanager
def add(model, hook_name: str, direction: Float[Tensor, " d_model"], alpha: float) -> Iterator[None]:
    """Within the block, ``alpha * direction`` is added to the activation at ``hook_name``."""
    with torch.no_grad(), model.hooks(fwd_hooks=add_hooks(model, hook_name, direction, alpha)):
        yield


def add_hooks(model, hook_name: str, direction: Float[Tensor, " d_model"], alpha: float) -> list[lm.Hook]:
    """The checked ``(hook_name, fn)`` pair that :func:`add` installs."""
    check_hook_name(model, hook_name)
    if not isinstance(direction, Tensor) or direction.ndim != 1 or direction.shape[0] != model.cfg.d_model:
        shape = tuple(direction.shape) if isinstance(direction, Tensor) else type(direction).__name__
        raise ValueError(f"direction must have shape (d_model={model.cfg.d_model},), got {shape}")
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    return [(hook_name, partial(add_hook, direction=direction, alpha=alpha))]


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


def steering_hooks(
    model,
    *,
    sae: SAE | None = None,
    clamps: Mapping[int, float] | None = None,
    direction: Tensor | None = None,
    alpha: float = 0.0,
    hook_name: str | None = None,
) -> list[lm.Hook]:
    """The checked hooks for either ``clamps`` (with ``sae``) or ``alpha * direction`` at ``hook_name``."""
    if (clamps is None) == (direction is None):
        raise ValueError("give either clamps (with sae) or direction (with alpha and hook_name), not both")
    if clamps is not None:
        if sae is None:
            raise ValueError("clamps need the sae whose features they name")
        return clamp_hooks(model, sae, clamps, hook_name=hook_name)
    if hook_name is None:
        raise ValueError("additive steering needs hook_name")
    return add_hooks(model, hook_name, direction, alpha)


def generate_replies(
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
    hooks = steering_hooks(model, sae=sae, clamps=clamps, direction=direction, alpha=alpha, hook_name=hook_name)
    ask = partial(lm.chat, model, prompt, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    return Replies(ask(), ask(fwd_hooks=hooks))


def stream_replies(model, prompt: str, *, feature: int | None = None, system: str | None = None,
                   baseline: bool = True, **options) -> Iterator[tuple[str, StreamedToken]]:
    """:func:`generate_replies`, token by token: yields ``("baseline", token)`` and ``("steered", token)`` in turn
    until both replies have ended, so both grow side by side. The tokens are those of :func:`generate_replies`, and
    ``options`` are its keyword arguments (``sae``, ``clamps`` or ``direction`` / ``alpha`` / ``hook_name``,
    ``max_new_tokens``, ``temperature``, ``seed``; the one list of them is ``generate_replies``'s signature).

    ``feature`` (with ``sae``): each token also carries that feature's activation at the SAE's hook, as the
    model computed it before the steering hook changed it (see :mod:`saelab.streaming`).
    ``baseline=False``: the steered reply only (the caller still has the baseline of the same settings).

        for which, token in steer.stream_replies(model, "What is your physical form?", sae=sae,
                                                 clamps={f: 1.5 * store.max_activation[f].item()}, feature=f):
            print(which, repr(token.text), token.activation)
    """
    request = inspect.signature(generate_replies).bind(model, prompt, **options)  # a wrong keyword is a TypeError here
    request.apply_defaults()
    given = request.arguments
    hooks = steering_hooks(model, **{name: given[name] for name in ("sae", "clamps", "direction", "alpha",
                                                                    "hook_name")})
    if feature is not None and given["sae"] is None:
        raise ValueError("feature needs the sae whose feature it is")
    tokens = lm.chat_tokens(model, prompt, system)
    # A clamp's hook_name is the SAE's own hook; an added direction's may be another, so the SAE's record rules.
    track = (dict(sae=given["sae"], feature=feature, hook_name=given["hook_name"] if given["clamps"] is not None
                  else None) if feature is not None else {})
    options = dict(max_new_tokens=given["max_new_tokens"], temperature=given["temperature"], seed=given["seed"],
                   **track)
    # Built here, not in the generator below, so a bad request fails at the call rather than at the first token.
    streams = {"steered": streaming.stream_generate(model, tokens, fwd_hooks=hooks, **options)}
    if baseline:
        streams = {"baseline": streaming.stream_generate(model, tokens, **options), **streams}
    return _interleave(streams)


def _interleave(streams: dict[str, Iterator[StreamedToken]]) -> Iterator[tuple[str, StreamedToken]]:
    while streams:
        for which, stream in list(streams.items()):
            token = next(stream, None)
            if token is None:
                del streams[which]
            else:
                yield which, token


# ----------------------------------------------------------------------------------------- names
# ``lm.generate`` continues a token tensor; answering a prompt twice, unsteered and steered, is
# ``generate_replies``, the all-at-once twin of ``stream_replies``. ``steer.generate`` warns for one release.
from saelab.deprecated import renamed

generate = renamed("saelab.steer.generate", generate_replies, "saelab.steer.generate_replies")
