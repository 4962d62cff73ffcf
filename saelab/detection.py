"""Strategy 1, detection: a concept feature fires when its concept is in the text and stays silent otherwise.

Two questions, kept apart so that the sentences used to pick a feature are not the ones used to test it:

* ``score_concept`` ranks every feature on the concept's *training slice* against other text (the other
  concepts' slices and corpus text): in what fraction of concept passages does it fire (``recall``), and of
  those that use none of the concept's surface words (``recall_unnamed``: for the bridge, no "bridge",
  "Golden", "Gate" or "San Francisco", so a feature for one of those words cannot fire there), in what
  fraction of other passages (``false_rate``), and on what fraction of the slice's tokens (``coverage``: a
  feature that fires only on the name tokens covers a few percent; a concept feature, much more).
* ``check_hard_negatives`` tests features on the passages without the surface words and on *hard negatives*:
  text that shares those words but not the concept (other bridges, other gates, San Francisco without the
  bridge). A feature for the word " bridge" fires on the Brooklyn Bridge and not on "the orange span over the
  strait"; a concept feature does the opposite.
* ``check_heldout`` then tests one feature on the concept's *held-out* sentences, never trained on: it should
  fire on each concept sentence and stay at zero on the unrelated ones.

Activations of tokens with a residual norm above ``max_norm`` (rare outliers the SAE never trained on) are
ignored, as is position 0 (BOS).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from saelab import concepts, corpus, deprecated
from saelab.harvest import collect_activations
from saelab.sae import SAE

# The surface words of each concept: its name, the kind of thing it is and where it stands, as regular
# expressions matched on whole words, any case. A passage with none of them tests whether a feature knows the
# concept or only one of these words ("bridge" matches "footbridge" too; "gate" does not match "gateway").
SURFACE_WORDS = {
    "golden_gate": ("golden", "gates?", r"\w*bridg\w*", "san francisco", "francisco"),
    "eiffel_tower": ("eiffel", r"tower\w*"),
    "volcanoes": ("volcano", "volcanoes", "volcanic"),
    "whales": ("whale", "whales", "whaling"),
    "pasta": ("pasta",),
}
HARD_NEGATIVES = "{concept}_hard_negatives.json"


@dataclass
class TextStats:
    """Per text and feature: the maximum activation, and the number of tokens where the feature fired."""

    maxima: Float[Tensor, "n_texts d_sae"]
    fired_tokens: Float[Tensor, "n_texts d_sae"]
    n_tokens: Float[Tensor, " n_texts"]


def text_stats(model, sae: SAE, texts: Sequence[str], *old_shape, hook_name: str | None = None,
               max_norm: float = 1000.0, max_tokens: int = 256, batch_size: int = 8, progress: bool = False
               ) -> TextStats:
    """Run ``texts`` through the model to the SAE's hook (or ``hook_name``) and summarise each feature on each text.

    Texts are sorted by length and right-padded in batches: attention is causal, so padding after a text
    cannot change its activations, and the padded positions are masked out.
    """
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise ValueError("texts must be a non-empty list of non-empty strings")
    hook_name = deprecated.positional_hook("detection.text_stats(model, sae, texts)", old_shape, hook_name)
    name = sae.check_fits(model, hook_name)
    max_tokens = min(max_tokens, model.cfg.n_ctx)
    rows = [model.to_tokens(t)[0, :max_tokens] for t in texts]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    d_sae = sae.cfg.d_sae
    maxima, fired = torch.zeros(len(rows), d_sae), torch.zeros(len(rows), d_sae)
    n_tokens = torch.zeros(len(rows))
    for start in tqdm(range(0, len(order), batch_size), desc="encoding texts", disable=not progress):
        chosen = order[start:start + batch_size]
        width = max(len(rows[i]) for i in chosen)
        tokens = torch.zeros(len(chosen), width, dtype=torch.long)
        valid = torch.zeros(len(chosen), width, dtype=torch.bool)
        for j, i in enumerate(chosen):
            tokens[j, :len(rows[i])] = rows[i]
            valid[j, 1:len(rows[i])] = True  # position 0 is BOS
        acts = collect_activations(model, name, tokens, batch_size=len(chosen), progress=False, drop_bos=False)
        acts = acts.float().view(len(chosen), width, -1)
        valid &= acts.norm(dim=-1) <= max_norm
        with torch.no_grad():
            codes = sae.encode(acts) * valid.unsqueeze(-1)
        for j, i in enumerate(chosen):
            maxima[i] = codes[j].max(dim=0).values
            fired[i] = (codes[j] > 0).sum(dim=0).float()
            n_tokens[i] = valid[j].sum()
    return TextStats(maxima, fired, n_tokens)


def names_concept(text: str, concept: str) -> bool:
    """Whether ``text`` uses one of ``concept``'s surface words (for the bridge: "bridge", "Golden", "Gate",
    "San Francisco", see ``SURFACE_WORDS``)."""
    words = SURFACE_WORDS.get(concept, ())
    return any(re.search(rf"\b(?:{w})\b", text, flags=re.IGNORECASE) for w in words)


def unnamed_passages(concept: str) -> list[str]:
    """The passages of ``concept``'s training slice that use none of its surface words."""
    return [p for p in concepts.passages(concept) if not names_concept(p, concept)]


def hard_negatives(concept: str) -> dict[str, list[str]]:
    """Passages that share ``concept``'s surface words but not the concept, by group (``other_bridges``, …).

    They live in ``assets/concepts/<concept>_hard_negatives.json`` and are never trained on.
    """
    concepts.passages(concept)  # refuses an unknown concept, naming the known ones
    path = concepts.CONCEPT_DIR / HARD_NEGATIVES.format(concept=concept)
    if not path.is_file():
        raise ValueError(f"concept {concept!r} has no hard negatives ({path.name} is missing)")
    return {group: list(texts) for group, texts in json.loads(path.read_text(encoding="utf-8")).items()}


@dataclass
class ConceptScores:
    """Every feature scored on a concept's training slice against other text (see the module docstring)."""

    concept: str
    recall: Float[Tensor, " d_sae"]
    recall_unnamed: Float[Tensor, " d_sae"]
    false_rate: Float[Tensor, " d_sae"]
    coverage: Float[Tensor, " d_sae"]
    n_concept: int
    n_unnamed: int
    n_other: int

    def score(self) -> Float[Tensor, " d_sae"]:
        """Fires on the concept's passages, named or not, and not elsewhere."""
        return torch.minimum(self.recall, self.recall_unnamed) - self.false_rate

    def top(self, k: int = 10, min_coverage: float = 0.0) -> list[dict]:
        """The ``k`` best features, among those firing on at least ``min_coverage`` of the slice's tokens."""
        score = self.score().masked_fill(self.coverage < min_coverage, float("-inf"))
        ids = score.topk(min(k, score.numel())).indices
        return [{"feature": int(f), "score": float(self.score()[f]), "recall": float(self.recall[f]),
                 "recall_unnamed": float(self.recall_unnamed[f]), "false_rate": float(self.false_rate[f]),
                 "coverage": float(self.coverage[f])} for f in ids if score[f] > float("-inf")]


def other_texts(concept: str, n_corpus: int = 120, seed: int = 0) -> list[str]:
    """Text that is not about ``concept``: the other concepts' slices and a sample of the built-in corpus."""
    others = [p for name in concepts.available() if name != concept for p in concepts.passages(name)]
    return others + corpus.load_texts(max_texts_per_source=max(1, n_corpus // len(corpus.SOURCES)), seed=seed)


def score_concept(model, sae: SAE, concept: str, *old_shape, hook_name: str | None = None,
                  positives: Sequence[str] | None = None, negatives: Sequence[str] | None = None,
                  max_norm: float = 1000.0, max_tokens: int = 128, progress: bool = True) -> ConceptScores:
    """Score every feature of ``sae`` as a detector of ``concept`` (see ``ConceptScores``).

    ``positives`` default to the concept's training slice, ``negatives`` to ``other_texts(concept)``; pass
    subsets of them for a faster, rougher answer.
    """
    hook_name = deprecated.positional_hook("detection.score_concept(model, sae, concept)", old_shape, hook_name)
    positives = list(positives) if positives is not None else concepts.passages(concept)
    negatives = list(negatives) if negatives is not None else other_texts(concept)
    if not positives or not negatives:
        raise ValueError("positives and negatives must each hold at least one text")
    # Each text is cut to ``max_tokens``, so that long corpus texts (whole chapters) are not more likely to
    # fire somewhere just for being long.
    stats = text_stats(model, sae, positives + negatives, hook_name=hook_name, max_norm=max_norm,
                       max_tokens=max_tokens, progress=progress)
    return concept_scores(stats, positives, concept)


def concept_scores(stats: TextStats, positives: Sequence[str], concept: str) -> ConceptScores:
    """``ConceptScores`` from ``text_stats`` of ``positives`` followed by the negatives."""
    n = len(positives)
    if not 0 < n < stats.maxima.shape[0]:
        raise ValueError(f"stats must cover the {n} positives followed by at least one negative")
    fires = stats.maxima > 0
    unnamed = torch.tensor([not names_concept(t, concept) for t in positives])
    return ConceptScores(
        concept=concept,
        recall=fires[:n].float().mean(0),
        recall_unnamed=fires[:n][unnamed].float().mean(0) if unnamed.any() else torch.zeros(fires.shape[1]),
        false_rate=fires[n:].float().mean(0),
        coverage=stats.fired_tokens[:n].sum(0) / stats.n_tokens[:n].sum().clamp(min=1),
        n_concept=n, n_unnamed=int(unnamed.sum()), n_other=fires.shape[0] - n,
    )


@dataclass
class HeldOutCheck:
    """One feature on a concept's held-out sentences: its maximum activation on each."""

    feature: int
    concept: str
    concept_texts: list[str]
    concept_maxima: list[float]
    unrelated_texts: list[str]
    unrelated_maxima: list[float]

    @property
    def fires_on_concept(self) -> int:
        return sum(v > 0 for v in self.concept_maxima)

    @property
    def silent_on_unrelated(self) -> int:
        return sum(v == 0 for v in self.unrelated_maxima)

    def __str__(self) -> str:
        return (f"feature {self.feature} on held-out {self.concept} sentences: fires on {self.fires_on_concept}/"
                f"{len(self.concept_maxima)}, silent on {self.silent_on_unrelated}/{len(self.unrelated_maxima)} "
                "unrelated")


def check_heldout(model, sae: SAE, feature: int, concept: str, *old_shape, hook_name: str | None = None,
                  max_norm: float = 1000.0) -> HeldOutCheck:
    """Strategy 1 both ways on sentences never trained on: does ``feature`` fire on ``concept`` and only there?"""
    hook_name = deprecated.positional_hook("detection.check_heldout(model, sae, feature, concept)", old_shape,
                                           hook_name)
    sae.check_feature(feature)
    held = concepts.heldout(concept)
    stats = text_stats(model, sae, held.concept + held.unrelated, hook_name=hook_name, max_norm=max_norm)
    values = stats.maxima[:, feature].tolist()
    n = len(held.concept)
    return HeldOutCheck(feature, concept, held.concept, values[:n], held.unrelated, values[n:])


def concept_verdict(unnamed_maxima: Sequence[float], group_maxima: dict[str, Sequence[float]], *,
                    min_recall: float = 0.5, max_false_rate: float = 0.25) -> bool:
    """Whether per-text maxima look like a concept feature's: firing on at least ``min_recall`` of the passages
    without a surface word, and on at most ``max_false_rate`` of each group of hard negatives."""
    if not len(unnamed_maxima) or not group_maxima:
        raise ValueError("the verdict needs maxima on at least one unnamed passage and one group of hard negatives")
    recall = sum(v > 0 for v in unnamed_maxima) / len(unnamed_maxima)
    return recall >= min_recall and all(sum(v > 0 for v in values) / len(values) <= max_false_rate
                                        for values in group_maxima.values())


@dataclass
class HardNegativeCheck:
    """One feature on the slice's passages without a surface word, and on each group of hard negatives."""

    feature: int
    concept: str
    unnamed_maxima: list[float]
    group_maxima: dict[str, list[float]]

    @property
    def recall_unnamed(self) -> float:
        return sum(v > 0 for v in self.unnamed_maxima) / len(self.unnamed_maxima)

    @property
    def false_rates(self) -> dict[str, float]:
        return {group: sum(v > 0 for v in values) / len(values) for group, values in self.group_maxima.items()}

    def is_concept_feature(self, min_recall: float = 0.5, max_false_rate: float = 0.25) -> bool:
        return concept_verdict(self.unnamed_maxima, self.group_maxima, min_recall=min_recall,
                               max_false_rate=max_false_rate)

    def __str__(self) -> str:
        rates = ", ".join(f"{group} {rate:.0%}" for group, rate in self.false_rates.items())
        verdict = "a concept feature" if self.is_concept_feature() else "not a concept feature"
        return (f"feature {self.feature}: fires on {self.recall_unnamed:.0%} of the {len(self.unnamed_maxima)} "
                f"{self.concept} passages without a surface word; on hard negatives: {rates} -> {verdict}")


def check_hard_negatives(model, sae: SAE, features: Sequence[int], concept: str, *old_shape,
                         hook_name: str | None = None, unnamed: Sequence[str] | None = None, max_norm: float = 1000.0,
                         max_tokens: int = 128) -> list[HardNegativeCheck]:
    """``features`` on ``concept``'s passages without a surface word and on its hard negatives, one pass for all.

    ``unnamed`` defaults to ``unnamed_passages(concept)``; a subset gives a faster, rougher answer.
    """
    hook_name = deprecated.positional_hook("detection.check_hard_negatives(model, sae, features, concept)",
                                           old_shape, hook_name)
    for feature in features:
        sae.check_feature(feature)
    unnamed = list(unnamed) if unnamed is not None else unnamed_passages(concept)
    if any(names_concept(text, concept) for text in unnamed):
        raise ValueError(f"unnamed passages must not use a surface word of {concept!r} ({SURFACE_WORDS[concept]})")
    groups = hard_negatives(concept)
    texts = unnamed + [t for values in groups.values() for t in values]
    maxima = text_stats(model, sae, texts, hook_name=hook_name, max_norm=max_norm, max_tokens=max_tokens).maxima
    checks = []
    for feature in features:
        column = maxima[:, feature].tolist()
        split, start = {}, len(unnamed)
        for group, values in groups.items():
            split[group], start = column[start:start + len(values)], start + len(values)
        checks.append(HardNegativeCheck(int(feature), concept, column[:len(unnamed)], split))
    return checks


def name_concept_features(model, sae: SAE, names: Sequence[str] | None = None, *, min_coverage: float = 0.0,
                          min_score: float = 0.5, progress: bool = True) -> dict[str, dict]:
    """For each concept, the best-scoring feature on its slice that fires on at least ``min_coverage`` of the
    slice's tokens, with the evidence: its slice scores, the runners-up, and the held-out check.

    A concept whose best score is below ``min_score`` gets no name: no feature detects it. ``group`` lists every
    feature among the best five that scores at least ``min_score``: a small SAE often splits a concept over
    several features (one per word of it, say), which only together carry the whole of it.
    """
    named = {}
    for concept in names or concepts.available():
        ranked = score_concept(model, sae, concept, progress=progress).top(k=5, min_coverage=min_coverage)
        if not ranked or ranked[0]["score"] < min_score:
            continue
        check = check_heldout(model, sae, ranked[0]["feature"], concept)
        named[concept] = {"feature": ranked[0]["feature"], "slice": ranked[0], "runners_up": ranked[1:],
                          "group": [row["feature"] for row in ranked if row["score"] >= min_score],
                          "heldout": {"fires_on_concept": check.fires_on_concept,
                                      "silent_on_unrelated": check.silent_on_unrelated,
                                      "concept_maxima": check.concept_maxima,
                                      "unrelated_maxima": check.unrelated_maxima}}
    return named


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json
    from pathlib import Path

    from saelab import lm
    from saelab.files import write_json_atomic

    parser = argparse.ArgumentParser(description="Name an SAE's concept features; writes <sae folder>/features.json.")
    parser.add_argument("sae_folder", type=Path)
    parser.add_argument("--concepts", nargs="*", default=None, help=f"default: {', '.join(concepts.available())}")
    parser.add_argument("--min-coverage", type=float, default=0.0)
    parser.add_argument("--min-score", type=float, default=0.5)
    args = parser.parse_args(argv)
    sae = SAE.load(args.sae_folder).eval()
    model = lm.load_model(sae.cfg.metadata.get("model_name", lm.DEFAULT_MODEL))
    named = name_concept_features(model, sae, args.concepts, min_coverage=args.min_coverage,
                                  min_score=args.min_score)
    file = args.sae_folder / "features.json"
    # Detection rewrites its own findings; a steering choice recorded there (steering_search) stays.
    recorded = json.loads(file.read_text()) if file.is_file() else {}
    for concept, entry in recorded.items():
        if "steer" in entry:
            named.setdefault(concept, {})["steer"] = entry["steer"]
    write_json_atomic(file, named)
    print(json.dumps({c: {"feature": v["feature"], **v["slice"], "heldout": [v["heldout"]["fires_on_concept"],
                                                                           v["heldout"]["silent_on_unrelated"]]}
                      for c, v in named.items()}, indent=1))


if __name__ == "__main__":
    main()
