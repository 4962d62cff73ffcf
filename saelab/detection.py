"""Strategy 1, detection: a concept feature fires when its concept is in the text and stays silent otherwise.

Two questions, kept apart so that the sentences used to pick a feature are not the ones used to test it:

* ``score_concept`` ranks every feature on the concept's *training slice* against other text (the other
  concepts' slices and corpus text): in what fraction of concept passages does it fire (``recall``), and of
  those that never name the concept (``recall_unnamed``: a token feature for "Golden" cannot fire there), in
  what fraction of other passages (``false_rate``), and on what fraction of the slice's tokens (``coverage``:
  a feature that fires only on the name tokens covers a few percent; a concept feature, much more).
* ``check_heldout`` then tests one feature on the concept's *held-out* sentences, never trained on: it should
  fire on each concept sentence and stay at zero on the unrelated ones.

Activations of tokens with a residual norm above ``max_norm`` (rare outliers the SAE never trained on) are
ignored, as is position 0 (BOS).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from saelab import concepts, corpus
from saelab.features import check_feature
from saelab.harvest import collect_activations
from saelab.sae import SAE
from saelab.splice import check_sae_fits_model
from saelab.steer import sae_hook_name

# Words that name each concept outright; passages without any of them test whether a feature knows the concept
# or only its name.
NAME_WORDS = {
    "golden_gate": ("golden", "gate"),
    "eiffel_tower": ("eiffel",),
    "volcanoes": ("volcano", "volcanoes", "volcanic"),
    "whales": ("whale", "whales"),
    "pasta": ("pasta",),
}


@dataclass
class TextStats:
    """Per text and feature: the maximum activation, and the number of tokens where the feature fired."""

    maxima: Float[Tensor, "n_texts d_sae"]
    fired_tokens: Float[Tensor, "n_texts d_sae"]
    n_tokens: Float[Tensor, " n_texts"]


def text_stats(model, sae: SAE, texts: Sequence[str], hook_name: str | None = None, *, max_norm: float = 1000.0,
               max_tokens: int = 256, batch_size: int = 8, progress: bool = False) -> TextStats:
    """Run ``texts`` through the model to the SAE's hook and summarise each feature on each text.

    Texts are sorted by length and right-padded in batches: attention is causal, so padding after a text
    cannot change its activations, and the padded positions are masked out.
    """
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise ValueError("texts must be a non-empty list of non-empty strings")
    name = sae_hook_name(sae, hook_name)
    check_sae_fits_model(model, sae, name)
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
    """Whether ``text`` names ``concept`` outright (e.g. contains "Golden" or "Gate")."""
    words = NAME_WORDS.get(concept, ())
    return any(re.search(rf"\b{re.escape(w)}\b", text, flags=re.IGNORECASE) for w in words)


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


def score_concept(model, sae: SAE, concept: str, hook_name: str | None = None, *,
                  positives: Sequence[str] | None = None, negatives: Sequence[str] | None = None,
                  max_norm: float = 1000.0, max_tokens: int = 128, progress: bool = True) -> ConceptScores:
    """Score every feature of ``sae`` as a detector of ``concept`` (see ``ConceptScores``).

    ``positives`` default to the concept's training slice, ``negatives`` to ``other_texts(concept)``; pass
    subsets of them for a faster, rougher answer.
    """
    positives = list(positives) if positives is not None else concepts.passages(concept)
    negatives = list(negatives) if negatives is not None else other_texts(concept)
    if not positives or not negatives:
        raise ValueError("positives and negatives must each hold at least one text")
    # Each text is cut to ``max_tokens``, so that long corpus texts (whole chapters) are not more likely to
    # fire somewhere just for being long.
    stats = text_stats(model, sae, positives + negatives, hook_name, max_norm=max_norm, max_tokens=max_tokens,
                       progress=progress)
    n = len(positives)
    fires = stats.maxima > 0
    unnamed = torch.tensor([not names_concept(t, concept) for t in positives])
    return ConceptScores(
        concept=concept,
        recall=fires[:n].float().mean(0),
        recall_unnamed=fires[:n][unnamed].float().mean(0) if unnamed.any() else torch.zeros(sae.cfg.d_sae),
        false_rate=fires[n:].float().mean(0),
        coverage=stats.fired_tokens[:n].sum(0) / stats.n_tokens[:n].sum().clamp(min=1),
        n_concept=n, n_unnamed=int(unnamed.sum()), n_other=len(negatives),
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


def check_heldout(model, sae: SAE, feature: int, concept: str, hook_name: str | None = None,
                  max_norm: float = 1000.0) -> HeldOutCheck:
    """Strategy 1 both ways on sentences never trained on: does ``feature`` fire on ``concept`` and only there?"""
    check_feature(sae, feature)
    held = concepts.heldout(concept)
    stats = text_stats(model, sae, held.concept + held.unrelated, hook_name, max_norm=max_norm)
    values = stats.maxima[:, feature].tolist()
    n = len(held.concept)
    return HeldOutCheck(feature, concept, held.concept, values[:n], held.unrelated, values[n:])


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
    write_json_atomic(args.sae_folder / "features.json", named)
    print(json.dumps({c: {"feature": v["feature"], **v["slice"], "heldout": [v["heldout"]["fires_on_concept"],
                                                                           v["heldout"]["silent_on_unrelated"]]}
                      for c, v in named.items()}, indent=1))


if __name__ == "__main__":
    main()
