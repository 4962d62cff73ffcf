"""Written concept slices: passages about a few concrete concepts, mixed into the SAE's training corpus.

The built-in corpus (Bible chapters, technical docstrings) rarely mentions bridges or volcanoes, so an SAE
trained on it alone has no reason to spend a latent on them. Each concept here has a training slice
(``assets/concepts/<name>.txt``, one passage per paragraph) and held-out sentences
(``<name>_heldout.json``: ``concept`` and ``unrelated``) that are never trained on and serve to test
"strategy 1": a concept feature fires on the concept's sentences and stays silent on the others.
Provenance and counts: ``assets/concepts/README.md`` (original text written for saelab, Apache-2.0).
A concept may also have a slice the model wrote itself (``<name>.generated.txt``, see
:mod:`saelab.concept_generation`): extra training signal only, never used to score or test a feature.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

CONCEPT_DIR = Path(__file__).parent / "assets" / "concepts"


def available() -> list[str]:
    """Concepts with a training slice, e.g. ``['eiffel_tower', 'golden_gate', 'pasta', ...]``."""
    return sorted(p.stem for p in CONCEPT_DIR.glob("*.txt") if "." not in p.stem)


def _check(name: str) -> Path:
    path = CONCEPT_DIR / f"{name}.txt"
    if not isinstance(name, str) or not path.is_file():
        raise ValueError(f"concept must be one of {', '.join(available())}; got {name!r}")
    return path


def _paragraphs(path: Path) -> tuple[str, ...]:
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    return tuple(p.strip() for p in text.split("\n\n") if p.strip())


@lru_cache(maxsize=None)
def _passages(name: str, generated: bool) -> tuple[str, ...]:
    path = _check(name)
    return _paragraphs(path.with_suffix(".generated.txt") if generated else path)


def passages(name: str) -> list[str]:
    """The written training slice of concept ``name``: one string per passage."""
    return list(_passages(name, False))


def generated_passages(name: str) -> list[str]:
    """Passages about concept ``name`` that the embedded model wrote (empty if it has none)."""
    return list(_passages(name, True))


class HeldOut(NamedTuple):
    concept: list[str]
    unrelated: list[str]


def heldout(name: str) -> HeldOut:
    """Test sentences for concept ``name`` that no training slice contains."""
    _check(name)
    path = CONCEPT_DIR / f"{name}_heldout.json"
    if not path.is_file():
        raise ValueError(f"concept {name!r} has no held-out sentences ({path.name} is missing)")
    data = json.loads(path.read_text(encoding="utf-8"))
    return HeldOut(list(data["concept"]), list(data["unrelated"]))


def all_passages(names: list[str] | None = None, repeats: int = 1, generated: bool = False) -> list[str]:
    """Every passage of ``names`` (default: all concepts), each ``repeats`` times (to weigh a slice up).

    ``generated``: also the passages the model wrote about each concept.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    chosen = available() if names is None else names
    slices = [passages(name) + (generated_passages(name) if generated else []) for name in chosen]
    return [p for one in slices for p in one] * repeats
