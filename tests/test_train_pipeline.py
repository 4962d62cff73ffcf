"""The end-to-end SAE command, test-sized: the same code path that builds the shipped SAE."""

import json

import pytest

from saelab import concepts, train
from saelab.feature_store import FeatureStore
from saelab.sae import SAE


@pytest.mark.slow
def test_a_test_sized_run_writes_a_loadable_sae_metrics_and_a_feature_store(tmp_path):
    out = tmp_path / "sae"
    train.main(["--sources", "python_topics", "--max-tokens", "4000", "--seq-len", "64", "--d-sae", "1152",
                "--k", "8", "--epochs", "2", "--batch-size", "512", "--feature-store-rows", "8",
                "--out", str(out), "--work-dir", str(tmp_path / "work")])
    sae = SAE.load(out)
    assert sae.cfg.d_in == 576 and sae.cfg.d_sae == 1152 and sae.cfg.k == 8
    assert sae.cfg.hook_name == "blocks.15.hook_resid_post"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["l0"] == pytest.approx(8.0)
    assert 0 < metrics["fvu"] < 1
    assert metrics["zero_ablated"] > metrics["spliced"] > metrics["clean"] - 0.5
    assert 0 < metrics["ce_loss_recovered"] <= 1.05
    assert metrics["train_tokens_kept"] + metrics["outliers_dropped"] == metrics["train_tokens"]
    assert metrics["recipe"]["layer"] == 15 and metrics["command"].startswith("python -m saelab.train")
    store = FeatureStore.load(out / "feature_store.safetensors")
    assert store.d_sae == 1152 and store.metadata["hook_name"] == "blocks.15.hook_resid_post"
    assert (store.max_activation > 0).sum() > 0


@pytest.mark.parametrize("kwargs, named", [
    ({"layer": -1}, "layer"), ({"d_sae": 0}, "d_sae"), ({"heldout_fraction": 1.0}, "heldout_fraction"),
    ({"harvest_dtype": "int8"}, "harvest_dtype"), ({"concept_repeats": -1}, "concept_repeats"),
    ({"device": "tpu"}, "device"), ({"train_dtype": "float16"}, "train_dtype"),
    ({"rows_per_shard": 0}, "rows_per_shard"), ({"shard_window": 0}, "shard_window"), ({"model": ""}, "model"),
])
def test_a_bad_recipe_is_refused_naming_the_setting(kwargs, named):
    with pytest.raises(ValueError, match=named):
        train.Recipe(**kwargs)


@pytest.mark.parametrize("flag, expected", [([], False), (["--generated-slices"], True),
                                            (["--no-generated-slices"], False)])
def test_the_generated_slices_flag_reaches_the_recipe(monkeypatch, tmp_path, flag, expected):
    captured = []
    monkeypatch.setattr(train, "run", lambda recipe, out, work_dir=None, progress=True: captured.append(recipe) or {})
    train.main(["--out", str(tmp_path), *flag])
    assert captured[0].generated_slices is expected


def test_the_generated_slices_are_mixed_into_the_corpus_only_when_asked(monkeypatch):
    seen = {}
    monkeypatch.setattr(train.corpus, "load_texts", lambda sources, seed: ["corpus text"])
    monkeypatch.setattr(train.corpus, "tokenize_corpus",
                        lambda model, texts, **kw: seen.setdefault(len(seen), list(texts)))
    for generated in (False, True):
        train.build_tokens(None, train.Recipe(concept_repeats=2, generated_slices=generated), progress=False)
    written, both = seen[0], seen[1]
    extra = sum(len(concepts.generated_passages(name)) for name in concepts.available())
    assert extra > 0 and len(both) - len(written) == 2 * extra
    assert set(concepts.generated_passages("golden_gate")) <= set(both) - set(written)


def test_text_files_join_the_corpus(monkeypatch, tmp_path):
    (tmp_path / "mine.txt").write_text("my own text")
    seen = {}
    monkeypatch.setattr(train.corpus, "load_texts", lambda sources, seed: ["corpus text"])
    monkeypatch.setattr(train.corpus, "tokenize_corpus", lambda model, texts, **kw: seen.setdefault(0, list(texts)))
    train.build_tokens(None, train.Recipe(concept_repeats=0, text_files=[str(tmp_path)]), progress=False)
    assert sorted(seen[0]) == ["corpus text", "my own text"]
    captured = []
    monkeypatch.setattr(train, "run", lambda recipe, out, work_dir=None, progress=True: captured.append(recipe) or {})
    train.main(["--out", str(tmp_path), "--text-files", str(tmp_path / "mine.txt"), "--device", "auto"])
    assert captured[0].text_files == [str(tmp_path / "mine.txt")] and captured[0].device == "auto"
