"""Generation one token at a time, for live display: the same tokens as ``lm.generate``, yielded as they come.

Each step runs one forward pass over only the newest token, with the key/value cache of everything before it.
Only public entry points are used: the bridge's ``model(tokens, return_type="logits_and_cache", use_cache=True,
past_key_values=cache)`` returns and takes the wrapped transformers model's own cache object (a
``transformers.DynamicCache``), and each step passes the attention mask and the new token's position as
transformers' ``generate`` does (the position only where the wrapped model's ``forward`` takes
``position_ids``). Whether cached steps equal full passes depends on the installed transformers /
TransformerLens pair; ``lm.load_model`` checks that once (``lm.check_cached_decoding``). Hook points fire on
every step, so a steering hook acts on the prompt (in the first, whole-prompt pass) and on every generated
token.

Nothing stays switched on between two tokens: the hooks, the intra-op thread count and no-grad mode are entered
and left inside each step, and sampling draws from the stream's own random state. A caller may pause between
tokens, interleave two streams (a baseline and a steered reply), or drop a stream half way, and the model and
torch are left as they were.

With ``sae`` and ``feature`` given, each token also comes with that feature's activation at the SAE's hook point
*on that token*, the number a feature dashboard shows for it. It is read by a read-only hook in the pass that
reads the token (the one that also predicts the next token), so a token is yielded one pass after it was
sampled, and the last token costs one extra one-token pass. The reader runs before the steering hooks given to
the stream, so it reports the activation as the model computed it, before a clamp overwrites it.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from functools import partial
from typing import Iterator, NamedTuple, Sequence

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens.utilities import sample_logits

from saelab import lm
from saelab.sae import SAE


class StreamedToken(NamedTuple):
    """One generated token."""

    token: int
    """Its id."""
    text: str
    """The text it adds to the reply ("" for special tokens such as the end-of-turn token)."""
    activation: float | None
    """The tracked feature's activation on this token (None when no feature is tracked)."""


def _stop_tokens(model) -> set[int]:
    """The ids that end a reply, chosen as TransformerBridge.generate chooses them."""
    eos = getattr(model.cfg, "eos_token_id", None)
    if eos is None:
        eos = model.tokenizer.eos_token_id
    return {eos} if isinstance(eos, int) else set(eos)


def _takes_position_ids(model) -> bool:
    """Whether the wrapped transformers model's ``forward`` accepts ``position_ids`` (decoder-only LMs do)."""
    return "position_ids" in inspect.signature(model.original_model.forward).parameters


def _read_feature(activation: Tensor, hook, sae: SAE, feature: int, into: list[float]) -> None:
    """Read-only hook: the feature's activation at the last position (the token this pass reads)."""
    into.append(float(sae.encode(activation[:, -1].float())[0, feature]))


def stream_generate(
    model,
    tokens: Int[Tensor, "1 pos"],
    max_new_tokens: int = 64,
    *,
    temperature: float = 0.0,
    seed: int | None = None,
    fwd_hooks: Sequence[lm.Hook] = (),
    sae: SAE | None = None,
    feature: int | None = None,
    hook_name: str | None = None,
    stop_at_eos: bool = True,
    threads: int | None = 1,
) -> Iterator[StreamedToken]:
    """Continue ``tokens`` one token at a time; greedy decoding yields exactly ``lm.generate``'s tokens.

    Args:
        tokens: a ``(1, pos)`` prompt, e.g. ``lm.chat_tokens(model, "What is your physical form?")``.
        temperature: 0 for greedy, else sampling (with ``seed``, the same tokens as ``lm.generate``).
        fwd_hooks: ``(hook_name, fn)`` pairs active during every step (steering), removed between steps.
        sae, feature: also report ``feature``'s activation on each generated token, at ``hook_name`` (default:
            the hook the SAE was trained on).
        stop_at_eos: stop after the end-of-turn token (which is yielded, as ``lm.generate`` returns it).
        threads: intra-op threads while a step runs (one decodes fastest on a busy CPU: see ``lm.generate``).

    Arguments are checked here, at the call; the model runs only as the stream is read.
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[0] != 1 or tokens.dtype != torch.long:
        raise ValueError("tokens must be a (1, pos) torch.long tensor: one prompt, e.g. from lm.chat_tokens")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if tokens.shape[1] + max_new_tokens > model.cfg.n_ctx:
        raise ValueError(f"the prompt ({tokens.shape[1]} tokens) plus max_new_tokens={max_new_tokens} exceeds the "
                         f"model's context n_ctx={model.cfg.n_ctx}")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    readers: list[lm.Hook] = []
    read: list[float] = []
    if (sae is None) != (feature is None):
        raise ValueError("give both sae and feature to track a feature's activation, or neither")
    if sae is not None:
        name = sae.check_fits(model, hook_name)
        sae.check_feature(feature)
        readers = [(name, partial(_read_feature, sae=sae, feature=feature, into=read))]
    # The sampler's own random state: seeded like lm.generate (torch.manual_seed), so the same seed samples the
    # same tokens, yet whatever the caller draws between two tokens cannot change the next one.
    rng_state = (torch.Generator().manual_seed(seed).get_state() if seed is not None else torch.get_rng_state())
    return _stream(model, tokens.to(model.cfg.device), max_new_tokens, temperature, rng_state, list(fwd_hooks),
                   readers, read, stop_at_eos, threads)


def _stream(model, prompt, max_new_tokens, temperature, rng_state, fwd_hooks, readers, read, stop_at_eos,
            threads) -> Iterator[StreamedToken]:
    stop = _stop_tokens(model) if stop_at_eos else set()
    pass_position = _takes_position_ids(model)
    length = prompt.shape[1]
    generated: list[int] = []
    emitted = ""  # reply text handed out so far

    def forward(step_tokens: Tensor, cache, hooks: list[lm.Hook]):
        """One pass; hooks, threads and no-grad last exactly as long as it does."""
        kwargs = {"use_cache": True}
        if cache is not None:  # as TransformerBridge.generate passes them, so the logits match it bit for bit
            kwargs.update(past_key_values=cache, attention_mask=torch.ones((1, length), dtype=torch.long,
                                                                           device=prompt.device))
            if pass_position:
                kwargs["position_ids"] = torch.full((1, 1), length - 1, dtype=torch.long, device=prompt.device)
        # model.hooks costs ~2 ms (it maps every hook point's aliases), so an unhooked step skips it.
        hooked = model.hooks(fwd_hooks=hooks) if hooks else contextlib.nullcontext()
        with lm.torch_threads(threads), torch.no_grad(), hooked:
            return model(step_tokens, return_type="logits_and_cache", **kwargs)

    def sample(logits: Tensor) -> int:
        nonlocal rng_state
        if temperature == 0:
            return int(logits.argmax())
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(rng_state)
            token = int(sample_logits(logits[None].float().cpu(), temperature=temperature)[0])
            rng_state = torch.get_rng_state()
        return token

    def piece(final: bool) -> str:
        """The text the newest token adds; a character split across tokens waits for its last byte."""
        nonlocal emitted
        text = model.tokenizer.decode(generated, skip_special_tokens=True)
        if text.endswith("\ufffd") and not final:
            return ""
        new = text.removeprefix(emitted)
        emitted = text
        return new

    logits, cache = forward(prompt, None, fwd_hooks)
    next_token = sample(logits[0, -1])
    for step in range(max_new_tokens):
        generated.append(next_token)
        length += 1
        last = step == max_new_tokens - 1 or next_token in stop
        if readers:
            # The pass that reads this token gives its activation (and the next token's logits).
            read.clear()
            logits, cache = forward(torch.tensor([[next_token]], device=prompt.device), cache, readers + fwd_hooks)
            yield StreamedToken(generated[-1], piece(last), read[-1])
        else:
            yield StreamedToken(next_token, piece(last), None)
            if last:
                return
            logits, cache = forward(torch.tensor([[next_token]], device=prompt.device), cache, fwd_hooks)
        if last:
            return
        next_token = sample(logits[0, -1])


def stream_chat(
    model,
    prompt: str,
    max_new_tokens: int = 64,
    *,
    system: str | None = None,
    **options,
) -> Iterator[StreamedToken]:
    """Answer one chat message token by token (chat template applied); options as :func:`stream_generate`.

        for step in stream_chat(model, "What is your physical form?"):
            print(step.text, end="", flush=True)
    """
    return stream_generate(model, lm.chat_tokens(model, prompt, system), max_new_tokens, **options)


def reply_text(steps: Sequence[StreamedToken]) -> str:
    """The reply a stream wrote, as ``lm.chat`` returns it (surrounding whitespace stripped)."""
    return "".join(step.text for step in steps).strip()
