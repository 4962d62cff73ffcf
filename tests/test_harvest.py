"""collect_activations and the shard store, on the tiny random Llama (fast) and the real model (slow)."""

import json
import warnings

import pytest
import torch

from saelab import corpus, harvest
from saelab.harvest import ActivationStore, collect_activations, harvest_to_store

HOOK = "blocks.2.hook_resid_post"


@pytest.fixture(scope="module")
def tokens(tiny_model, tiny_texts):
    return corpus.tokenize_corpus(tiny_model, tiny_texts * 3, seq_len=16, progress=False)


def reference(model, tokens, hook=HOOK, drop_bos=True):
    _, cache = model.run_with_cache(tokens, names_filter=hook)
    acts = cache[hook]
    return (acts[:, 1:] if drop_bos else acts).reshape(-1, acts.shape[-1])


@pytest.mark.parametrize("drop_bos", [True, False])
def test_matches_run_with_cache_in_token_order(tiny_model, tokens, drop_bos):
    acts = collect_activations(tiny_model, HOOK, tokens, batch_size=5, progress=False, drop_bos=drop_bos)
    assert acts.shape == (tokens.shape[0] * (tokens.shape[1] - int(drop_bos)), tiny_model.cfg.d_model)
    torch.testing.assert_close(acts, reference(tiny_model, tokens, drop_bos=drop_bos))
    assert len(harvest.token_index(tokens, drop_bos)) == acts.shape[0]


def test_forward_stops_after_the_hooked_layer(tiny_model, tokens, monkeypatch):
    seen = {}
    original = tiny_model.run_with_hooks

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_model, "run_with_hooks", spy)
    collect_activations(tiny_model, "blocks.1.mlp.hook_post", tokens[:2], progress=False)
    assert seen["stop_at_layer"] == 2
    # no hook is left behind on the model
    assert all(not hp.fwd_hooks for hp in tiny_model.hook_dict.values())


def test_bf16_is_close_to_fp32(tiny_model, tokens):
    fp32 = collect_activations(tiny_model, HOOK, tokens, progress=False)
    bf16 = collect_activations(tiny_model, HOOK, tokens, dtype=torch.bfloat16, progress=False)
    assert bf16.dtype == torch.bfloat16
    relative = (bf16.float() - fp32).norm(dim=-1) / fp32.norm(dim=-1)
    assert relative.median() < 0.02
    assert not torch.equal(bf16.float(), fp32)  # it really computed in bf16


def test_bad_hook_names_say_what_is_allowed(tiny_model, tokens):
    with pytest.raises(ValueError, match=r"nearest: \['blocks.2.hook_resid_post'"):
        collect_activations(tiny_model, "blocks.2.hook_resid_pots", tokens, progress=False)
    with pytest.raises(ValueError, match="layer 7 is beyond the model's 4 layers"):
        collect_activations(tiny_model, "blocks.7.hook_resid_post", tokens, progress=False)


def test_bad_tokens_are_refused(tiny_model, tokens):
    with pytest.raises(ValueError, match="empty"):
        collect_activations(tiny_model, HOOK, tokens[:0], progress=False)
    too_long = torch.ones(1, tiny_model.cfg.n_ctx + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="longer than the model's context n_ctx=64"):
        collect_activations(tiny_model, HOOK, too_long, progress=False)
    with pytest.raises(ValueError, match="torch.long"):
        collect_activations(tiny_model, HOOK, tokens.float(), progress=False)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        collect_activations(tiny_model, HOOK, tokens + 10_000, progress=False)


def leftovers(folder):
    """Temporary files an interrupted or finished write might have left behind."""
    return [p.name for p in folder.iterdir() if p.name.endswith((".partial", ".tmp"))]


def test_store_equals_in_memory_and_indexes_tokens(tiny_model, tokens, tmp_path):
    tokens = tokens[:14]  # 4 shards, the last one short
    store = harvest_to_store(tiny_model, HOOK, tokens, out_dir=tmp_path, rows_per_shard=4, progress=False)
    assert isinstance(store, ActivationStore) and store.complete
    expected = collect_activations(tiny_model, HOOK, tokens, progress=False)
    torch.testing.assert_close(store.load(), expected)
    assert len(store) == expected.shape[0]
    assert torch.equal(store.token_index(), harvest.token_index(tokens))
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["hook_name"] == HOOK and meta["seq_len"] == 16 and len(meta["shards"]) == -(-tokens.shape[0] // 4)
    assert not leftovers(tmp_path)


def test_collect_activations_with_out_dir_still_works_but_warns(tiny_model, tokens, tmp_path):
    tokens = tokens[:6]
    with pytest.warns(DeprecationWarning, match="harvest_to_store"):
        old = collect_activations(tiny_model, HOOK, tokens, out_dir=tmp_path / "old", rows_per_shard=4,
                                  progress=False)
    new = harvest_to_store(tiny_model, HOOK, tokens, tmp_path / "new", rows_per_shard=4, progress=False)
    assert isinstance(old, ActivationStore) and old.metadata["rows_per_shard"] == 4
    torch.testing.assert_close(old.load(), new.load())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the in-memory call has nothing to warn about
        assert isinstance(collect_activations(tiny_model, HOOK, tokens, progress=False), torch.Tensor)
    with pytest.raises(ValueError, match="rows_per_shard must be >= 1"):
        harvest_to_store(tiny_model, HOOK, tokens, tmp_path / "bad", rows_per_shard=0, progress=False)


def test_interrupted_harvest_resumes_without_half_written_shards(tiny_model, tokens, tmp_path, monkeypatch):
    tokens = tokens[:16]  # 4 shards of 4 rows
    calls = {"n": 0}
    real_save = harvest.save_file

    def crash_on_third_shard(tensors, filename):
        calls["n"] += 1
        if calls["n"] == 3:
            with open(filename, "wb") as half:  # a write cut short by the interruption
                half.write(b"\0" * 10)
            raise KeyboardInterrupt
        real_save(tensors, filename)

    monkeypatch.setattr(harvest, "save_file", crash_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        harvest_to_store(tiny_model, HOOK, tokens, out_dir=tmp_path, rows_per_shard=4, progress=False)
    assert not leftovers(tmp_path)  # the half-written shard was removed, not left beside the finished ones
    partial = ActivationStore(tmp_path)
    assert not partial.complete and len(partial.metadata["shards"]) == 2
    assert sorted(p.name for p in tmp_path.glob("shard_*.safetensors")) == ["shard_00000.safetensors",
                                                                           "shard_00001.safetensors"]
    monkeypatch.setattr(harvest, "save_file", real_save)
    forwards = {"rows": 0}
    original = tiny_model.run_with_hooks

    def count(batch, **kwargs):
        forwards["rows"] += batch.shape[0]
        return original(batch, **kwargs)

    monkeypatch.setattr(tiny_model, "run_with_hooks", count)
    store = harvest_to_store(tiny_model, HOOK, tokens, out_dir=tmp_path, rows_per_shard=4, progress=False)
    assert forwards["rows"] == tokens.shape[0] - 8  # the two finished shards were not recomputed
    assert store.complete and not leftovers(tmp_path)
    monkeypatch.undo()
    torch.testing.assert_close(store.load(), collect_activations(tiny_model, HOOK, tokens, progress=False))


def test_store_refuses_a_different_harvest(tiny_model, tokens, tmp_path):
    harvest_to_store(tiny_model, HOOK, tokens[:4], out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="holds a different harvest"):
        harvest_to_store(tiny_model, "blocks.1.hook_resid_post", tokens[:4], out_dir=tmp_path, progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    store = harvest_to_store(tiny_model, "blocks.1.hook_resid_post", tokens[:4], out_dir=tmp_path,
                             replace_different=True, progress=False)
    assert store.metadata["hook_name"] == "blocks.1.hook_resid_post" and store.complete
    torch.testing.assert_close(store.load(), reference(tiny_model, tokens[:4], "blocks.1.hook_resid_post"))
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="not an activation store"):
        ActivationStore(tmp_path / "nowhere")


def test_residual_norms_rows_are_layer_boundaries(tiny_model, tokens):
    norms = harvest.residual_norms(tiny_model, tokens[:2])
    assert norms.shape == (tiny_model.cfg.n_layers + 1, 2, tokens.shape[1])
    _, cache = tiny_model.run_with_cache(tokens[:2])
    torch.testing.assert_close(norms[0], cache["blocks.0.hook_resid_pre"].norm(dim=-1))
    torch.testing.assert_close(norms[3], cache["blocks.2.hook_resid_post"].norm(dim=-1))


@pytest.mark.slow
def test_real_model_harvest_equals_plain_transformers_hidden_state(real_model):
    from saelab import lm

    texts = corpus.load_texts(["python_topics"])[:20]
    tokens = corpus.tokenize_corpus(real_model, texts, seq_len=64, progress=False)[:4]
    acts = collect_activations(real_model, "blocks.15.hook_resid_post", tokens, progress=False)
    hf_model, _ = lm.load_default_hf()
    with torch.inference_mode():
        hidden = hf_model(tokens, output_hidden_states=True).hidden_states[16]
    expected = hidden[:, 1:].reshape(-1, hidden.shape[-1])
    torch.testing.assert_close(acts, expected, rtol=1e-4, atol=1e-3)
    norms = acts.norm(dim=-1)
    assert 100 < norms.median() < 300  # a typical layer-15 token; position 0 (dropped) is ~100x larger
