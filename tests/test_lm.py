"""load_model / chat: the embedded default offline (slow), device and cache handling, hooks in chat (fast)."""

import os
import time
import warnings

import pytest
import torch

from saelab import lm


def test_embedded_gguf_is_found_without_importing_its_package():
    path = lm.embedded_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SAELAB_CACHE_DIR", str(tmp_path / "here"))
    assert lm.cache_dir() == tmp_path / "here"
    assert lm.cached_model_dir().parent == tmp_path / "here"
    monkeypatch.delenv("SAELAB_CACHE_DIR")
    assert lm.cache_dir().name == "saelab"


def test_device_choice():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert lm.resolve_device("auto").type == expected
    with pytest.warns(UserWarning, match="silently wrong results on Apple MPS"):
        assert lm.resolve_device("mps").type == "mps"
    with pytest.raises(ValueError, match="device='tpu' is not supported"):
        lm.resolve_device("tpu")
    with pytest.raises(ValueError, match="dtype="):
        lm.load_model(dtype=torch.int8)


def test_other_names_fail_offline_naming_the_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="offline default is load_model\\('smollm2-135m-instruct'\\)"):
        lm.load_model("saelab-no-such-org/no-such-model")


def test_chat_prompt_has_one_bos(tiny_model):
    tokens = lm.chat_tokens(tiny_model, "What is your physical form?")
    bos = tiny_model.tokenizer.bos_token_id
    assert tokens[0, 0] == bos and tokens[0, 1] != bos
    with pytest.raises(ValueError, match="prompt must be a non-empty string"):
        lm.chat_tokens(tiny_model, "  ")


def test_chat_hooks_run_during_generation_and_are_removed(tiny_model):
    calls, threads_seen = [], set()
    threads_before = torch.get_num_threads()

    def count(activation, hook):
        calls.append(activation.shape[1])
        threads_seen.add(torch.get_num_threads())
        return activation

    reply = lm.chat(tiny_model, "hello", max_new_tokens=3, fwd_hooks=[("blocks.1.hook_resid_post", count)])
    assert isinstance(reply, str)
    assert calls and calls[0] > 1 and set(calls[1:]) <= {1}  # prompt once, then one token at a time (KV cache)
    assert threads_seen == {1} and torch.get_num_threads() == threads_before  # decoding on one thread
    n = len(calls)
    tiny_model(tiny_model.to_tokens("hello"))
    assert len(calls) == n

    def explode(activation, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        lm.chat(tiny_model, "hello", max_new_tokens=2, fwd_hooks=[("blocks.1.hook_resid_post", explode)])
    assert all(not point.fwd_hooks for point in tiny_model.hook_dict.values())
    assert torch.get_num_threads() == threads_before


def test_generate_returns_only_new_tokens(tiny_model):
    prompt = lm.chat_tokens(tiny_model, "hello")
    new = lm.generate(tiny_model, prompt, max_new_tokens=4, stop_at_eos=False, threads=None)
    assert new.shape == (1, 4)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        lm.generate(tiny_model, prompt, max_new_tokens=0)
    with pytest.raises(ValueError, match="threads must be >= 1 or None"):
        lm.generate(tiny_model, prompt, threads=0)


def test_interrupted_cache_write_leaves_nothing_behind(fresh_tiny_hf, tmp_path, monkeypatch):
    hf_model, tokenizer = fresh_tiny_hf
    target = tmp_path / "model"

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tokenizer, "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        lm._write_cache(hf_model, tokenizer, target)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    lm._write_cache(hf_model, tokenizer, target)
    assert (target / "COMPLETE").is_file() and (target / "model.safetensors").is_file()
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.slow
def test_cold_gguf_load_then_cached_reload_offline(tmp_path, monkeypatch):
    """From a fresh cache: the GGUF is dequantised and cached; the reload reads safetensors in seconds."""
    monkeypatch.setenv("SAELAB_CACHE_DIR", str(tmp_path))
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    start = time.perf_counter()
    cold = lm.load_model()
    cold_s = time.perf_counter() - start
    folder = lm.cached_model_dir()
    assert (folder / "COMPLETE").is_file() and (folder / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    start = time.perf_counter()
    warm = lm.load_model()
    warm_s = time.perf_counter() - start
    print(f"cold load {cold_s:.1f} s, cached reload {warm_s:.1f} s")
    assert warm_s < 10, f"cached reload took {warm_s:.1f} s (target < 3 s on an idle machine)"
    assert cold.cfg.n_layers == 30 and cold.cfg.d_model == 576
    tokens = cold.to_tokens("The Golden Gate Bridge is", prepend_bos=False)
    with torch.inference_mode():
        assert torch.equal(cold(tokens), warm(tokens))


@pytest.mark.slow
def test_bridge_logits_equal_plain_transformers(real_model):
    hf_model, tokenizer = lm.load_default_hf()
    tokens = lm.chat_tokens(real_model, "What is your physical form?")
    with torch.inference_mode():
        bridge_logits = real_model(tokens)
        hf_logits = hf_model(tokens).logits
    assert (bridge_logits - hf_logits).abs().max() < 1e-4
    assert "blocks.15.hook_resid_post" in real_model.hook_dict


@pytest.mark.slow
def test_chat_replies_in_text_only(real_model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reply = lm.chat(real_model, "What is the capital of France?", max_new_tokens=12)
    assert "Paris" in reply
    assert "<|im" not in reply and "assistant" not in reply.lower()[:12]


def test_a_cache_from_another_gguf_release_is_not_used(fresh_tiny_hf, tmp_path):
    hf_model, tokenizer = fresh_tiny_hf
    target = tmp_path / "model"
    lm._write_cache(hf_model, tokenizer, target)
    assert lm._cache_is_current(target)
    (target / "COMPLETE").write_text("converted from SmolLM2-135M-Instruct.Q4_1.gguf (1 bytes)\n")
    assert not lm._cache_is_current(target)
    lm._write_cache(hf_model, tokenizer, target)  # replaces the stale copy
    assert lm._cache_is_current(target)


@pytest.mark.slow
def test_load_model_stops_in_one_line_when_cached_decoding_is_broken(monkeypatch):
    """Simulates transformers 5.24 under TransformerLens 4.3: the attention layers never use the cache."""
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    monkeypatch.setattr(AttentionBridge, "_update_kv_cache", lambda self, k, v, **kwargs: (k, v))
    with pytest.raises(lm.CachedDecodingError, match=r"installed transformers .* verified: transformers>=") as caught:
        lm.load_model()
    assert "\n" not in str(caught.value)
    monkeypatch.undo()
    assert "Paris" in lm.chat(lm.load_model(), "What is the capital of France?", max_new_tokens=12)
