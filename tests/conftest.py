"""Fixtures: tiny random-weight Llama and GPT-2 models built in-process (milliseconds, no network)."""

from __future__ import annotations

import pytest
import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "In the beginning was the word, and the word was with the reader.",
    "Sparse autoencoders find features as directions in activation space.",
    "What is your physical form? I am a small language model.",
] * 4


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer (~300 tokens) with SmolLM2's special tokens and a ChatML template."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TRAINING_TEXT, vocab_size=300, min_frequency=1, special_tokens=specials,
                            show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|im_start|>",
                                        eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>",
                                        add_bos_token=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    # TransformerLens reads this key (it would re-load a tokenizer without add_bos_token from that name).
    tokenizer.init_kwargs["name_or_path"] = "tiny-llama"
    return tokenizer


def build_tiny_hf_model(vocab_size: int, seed: int = 0, initializer_range: float = 0.02):
    """A 4-layer, d_model 32 Llama with random weights, in eager attention (as the real default).

    At the default init its greedy replies repeat one token whatever came before; ``initializer_range=0.3``
    makes them depend on the context, which a test of cached decoding needs (a cache that ignores the prompt
    still repeats the same single token).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
                         initializer_range=initializer_range)
    config._attn_implementation = "eager"
    return LlamaForCausalLM(config).eval()


def build_tiny_gpt2_model(vocab_size: int, seed: int = 0):
    """A 2-layer, d_model 32 GPT-2 with random weights (learned positions, LayerNorm, GELU MLP, tied unembed)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=1,
                        eos_token_id=2, pad_token_id=2)
    config._attn_implementation = "eager"
    return GPT2LMHeadModel(config).eval()


def save_tiny_model(folder, architecture: str = "llama", seed: int = 0):
    """Write a tiny random ``llama`` or ``gpt2`` model and its tokenizer as a local Hugging Face folder."""
    builders = {"llama": build_tiny_hf_model, "gpt2": build_tiny_gpt2_model}
    tokenizer = build_tiny_tokenizer()
    tokenizer.init_kwargs.pop("name_or_path", None)
    builders[architecture](len(tokenizer), seed=seed).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_folders(tmp_path_factory):
    """``{"llama": folder, "gpt2": folder}``: tiny random models saved as local Hugging Face folders."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {name: save_tiny_model(root / name, name) for name in ("llama", "gpt2")}


@pytest.fixture(scope="session")
def tiny_hf():
    """``(hf_model, tokenizer)`` of the tiny random Llama."""
    tokenizer = build_tiny_tokenizer()
    return build_tiny_hf_model(len(tokenizer)), tokenizer


@pytest.fixture(scope="session")
def tiny_model(tiny_hf):
    """The tiny random Llama wrapped in a TransformerLens ``TransformerBridge`` (hooks as on the real model)."""
    from transformer_lens.model_bridge import TransformerBridge

    hf_model, tokenizer = tiny_hf
    bridge = TransformerBridge.boot_transformers("tiny-llama", hf_model=hf_model, tokenizer=tokenizer,
                                                 device="cpu")
    return bridge.eval()


@pytest.fixture(scope="session")
def lively_tiny_model():
    """A tiny random Llama bridge whose greedy continuations depend on the whole context (see above)."""
    from transformer_lens.model_bridge import TransformerBridge

    tokenizer = build_tiny_tokenizer()
    hf_model = build_tiny_hf_model(len(tokenizer), seed=1, initializer_range=0.3)
    return TransformerBridge.boot_transformers("tiny-llama", hf_model=hf_model, tokenizer=tokenizer,
                                               device="cpu").eval()


@pytest.fixture(scope="session")
def real_model():
    """The embedded default model (loads from the user cache if warm, else from the GGUF)."""
    from saelab import lm

    return lm.load_model()


@pytest.fixture
def fresh_tiny_hf():
    """A new ``(hf_model, tokenizer)`` pair not wrapped by TransformerLens (booting a bridge rewires the model)."""
    tokenizer = build_tiny_tokenizer()
    return build_tiny_hf_model(len(tokenizer)), tokenizer


@pytest.fixture(scope="session")
def tiny_texts():
    return list(TRAINING_TEXT)
