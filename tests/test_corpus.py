"""Offline corpus sources and tokenize_corpus's packing and BOS policy."""

import pytest
import torch

from saelab import corpus


def test_small_sources_are_offline_english():
    topics = corpus.source_texts("python_topics")
    bible = corpus.source_texts("kjv_bible")
    assert len(topics) > 50 and len(bible) == 1189  # the KJV has 1189 chapters
    assert bible[0].startswith("Genesis 1") and "In the beginning God created" in bible[0]


def test_load_texts_mixes_and_subsamples_reproducibly():
    mixed = corpus.load_texts(["python_topics", "kjv_bible"], max_texts_per_source=10, seed=3)
    assert len(mixed) == 20
    assert mixed == corpus.load_texts(["python_topics", "kjv_bible"], max_texts_per_source=10, seed=3)
    with pytest.raises(ValueError, match="unknown corpus source 'wikipedia'; choose from"):
        corpus.load_texts(["wikipedia"])


def test_docstrings_drop_doctests(tmp_path):
    long = "Explains a thing at length. " * 10
    (tmp_path / "m.py").write_text(f'"""{long}\n\n>>> 1 + 1\n2\n\nMore words here. {long}"""\n')
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text(f'"""{long}"""\n')
    found = corpus.docstrings_of(tmp_path)
    assert len(found) == 1 and ">>>" not in found[0] and "More words here" in found[0]


def test_packing_and_bos_policy(tiny_model):
    texts = ["the quick brown fox", "in the beginning was the word", "sparse autoencoders"] * 5
    tokens = corpus.tokenize_corpus(tiny_model, texts, seq_len=8, progress=False)
    tok = tiny_model.tokenizer
    sep = corpus.separator_id(tok)
    assert sep == tok.get_vocab()["<|endoftext|>"]
    stream = []
    for text in texts:
        stream += tok(text, add_special_tokens=False)["input_ids"] + [sep]
    assert tokens.dtype == torch.long and tokens.shape == (len(stream) // 7, 8)
    assert (tokens[:, 0] == tok.bos_token_id).all()
    assert tokens[:, 1:].reshape(-1).tolist() == stream[: tokens.shape[0] * 7]
    capped = corpus.tokenize_corpus(tiny_model, texts, seq_len=8, max_tokens=20, progress=False)
    assert capped.shape == (2, 8) and torch.equal(capped, tokens[:2])


def test_bad_corpora_are_refused(tiny_model):
    with pytest.raises(ValueError, match="texts is empty"):
        corpus.tokenize_corpus(tiny_model, ["", "   "], progress=False)
    with pytest.raises(ValueError, match="not one string"):
        corpus.tokenize_corpus(tiny_model, "one string", progress=False)
    with pytest.raises(ValueError, match="longer than the model's context n_ctx=64"):
        corpus.tokenize_corpus(tiny_model, ["hello"], seq_len=65, progress=False)
    with pytest.raises(ValueError, match="fewer than one row"):
        corpus.tokenize_corpus(tiny_model, ["hi"], seq_len=32, progress=False)


def test_user_files(tmp_path):
    (tmp_path / "a.txt").write_text("First text.")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("Second text.")
    assert corpus.text_files([tmp_path]) == ["First text.", "Second text."]
    with pytest.raises(FileNotFoundError, match="paths: no such file"):
        corpus.text_files([tmp_path / "missing.txt"])


def test_hf_dataset_offline_points_to_the_offline_corpus(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(OSError, match="offline, use saelab.corpus.load_texts"):
        corpus.hf_dataset_texts("saelab-no-such-org/no-such-dataset")


@pytest.mark.slow
def test_full_corpus_has_two_million_tokens(real_model):
    sizes = {}
    for name in corpus.SOURCES:
        texts = corpus.source_texts(name)
        sizes[name] = sum(len(ids) for ids in real_model.tokenizer(texts, add_special_tokens=False)["input_ids"])
    print({name: f"{n / 1e6:.2f}M" for name, n in sizes.items()}, f"total {sum(sizes.values()) / 1e6:.2f}M")
    assert min(sizes.values()) > 50_000
    assert sum(sizes.values()) >= 2_000_000


def test_parsed_sources_are_cached_as_json(tmp_path, monkeypatch):
    monkeypatch.setenv("SAELAB_CACHE_DIR", str(tmp_path))
    corpus._source_cached.cache_clear()
    first = corpus.source_texts("python_topics")
    files = list((tmp_path / "corpus").glob("python_topics-py*.json"))
    assert len(files) == 1 and not list((tmp_path / "corpus").glob(".*"))  # no temporary left
    corpus._source_cached.cache_clear()

    def must_not_parse():
        raise AssertionError("parsed again instead of reading the cache")

    monkeypatch.setitem(corpus.SOURCES, "python_topics", must_not_parse)
    assert corpus.source_texts("python_topics") == first
    corpus._source_cached.cache_clear()
