"""Strategy-1 scoring on the tiny random model: padded batches equal one text at a time, and the counts add up."""

import pytest
import torch

from saelab import concepts, detection, features
from saelab.sae import SAE, SAEConfig

HOOK = "blocks.2.hook_resid_post"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "In the beginning",
         "Sparse autoencoders find features as directions in activation space.", "What is your physical form?",
         "The word was with the reader."]


@pytest.fixture(scope="module")
def sae():
    return SAE(SAEConfig(d_in=32, d_sae=40, architecture="relu", metadata={"hook_name": HOOK}), seed=1)


def test_padded_batches_give_each_text_what_it_gets_alone(tiny_model, sae):
    stats = detection.text_stats(tiny_model, sae, TEXTS, batch_size=3)
    for i, text in enumerate(TEXTS):
        alone = features.feature_activations(tiny_model, sae, HOOK, tiny_model.to_tokens(text))[0, 1:]
        assert torch.allclose(stats.maxima[i], alone.max(0).values, atol=1e-5)
        assert torch.equal(stats.fired_tokens[i], (alone > 0).sum(0).float())
        assert stats.n_tokens[i] == alone.shape[0]


def test_outlier_tokens_are_ignored(tiny_model, sae):
    stats = detection.text_stats(tiny_model, sae, TEXTS[:2], max_norm=1e-6)
    assert stats.maxima.abs().max() == 0 and stats.n_tokens.sum() == 0


def test_names_concept_finds_whole_words_only():
    assert detection.names_concept("the Golden Gate at dawn", "golden_gate")
    assert not detection.names_concept("the long red span over the strait", "golden_gate")
    assert not detection.names_concept("a gateway to the city", "golden_gate")


def test_concept_scores_are_the_fractions_of_passages_and_tokens(tiny_model, sae):
    negatives = TEXTS
    scores = detection.score_concept(tiny_model, sae, "pasta", negatives=negatives, progress=False)
    positives = concepts.passages("pasta")
    stats = detection.text_stats(tiny_model, sae, positives + negatives)
    n = len(positives)
    assert scores.n_concept == n and scores.n_other == len(negatives)
    assert torch.allclose(scores.recall, (stats.maxima[:n] > 0).float().mean(0))
    assert torch.allclose(scores.false_rate, (stats.maxima[n:] > 0).float().mean(0))
    assert scores.n_unnamed >= 1
    assert torch.allclose(scores.coverage, stats.fired_tokens[:n].sum(0) / stats.n_tokens[:n].sum())
    top = scores.top(k=3)
    assert len(top) == 3 and top[0]["score"] >= top[1]["score"] >= top[2]["score"]
    assert scores.top(k=3, min_coverage=1.01) == []


def test_heldout_check_counts_both_ways(tiny_model, sae):
    check = detection.check_heldout(tiny_model, sae, 3, "golden_gate")
    held = concepts.heldout("golden_gate")
    assert check.concept_texts == held.concept and len(check.unrelated_maxima) == len(held.unrelated)
    assert check.fires_on_concept == sum(v > 0 for v in check.concept_maxima)
    assert f"fires on {check.fires_on_concept}/10" in str(check)


@pytest.mark.parametrize("bad, message", [(dict(feature=40), "feature"), (dict(feature=-1), "feature")])
def test_bad_input_is_named(tiny_model, sae, bad, message):
    with pytest.raises(ValueError, match=message):
        detection.check_heldout(tiny_model, sae, concept="golden_gate", **bad)
    with pytest.raises(ValueError, match="texts"):
        detection.text_stats(tiny_model, sae, ["fine", "  "])
    with pytest.raises(ValueError, match="concept"):
        detection.score_concept(tiny_model, sae, "bridges", negatives=TEXTS)
