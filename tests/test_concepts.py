"""The written concept slices load, stay apart from their held-out sentences, and are rich in paraphrase."""

import re

import pytest

from saelab import concepts


def test_the_golden_gate_slice_and_the_other_concepts_are_present():
    assert {"golden_gate", "volcanoes", "whales", "pasta", "eiffel_tower"} <= set(concepts.available())
    assert len(concepts.passages("golden_gate")) >= 150


@pytest.mark.parametrize("name", concepts.available())
def test_held_out_sentences_are_never_in_the_training_slice(name):
    training = " ".join(concepts.passages(name))
    try:
        held = concepts.heldout(name)
    except ValueError:
        pytest.fail(f"{name} has no held-out sentences")
    assert len(held.concept) == 10 and len(held.unrelated) == 10
    for sentence in held.concept + held.unrelated:
        assert sentence not in training


def test_many_golden_gate_passages_describe_the_bridge_without_its_name():
    passages = concepts.passages("golden_gate")
    unnamed = [p for p in passages if not re.search(r"\b(Golden|Gate)\b", p)]
    assert len(unnamed) / len(passages) >= 0.4


def test_unknown_concepts_and_bad_repeats_are_refused():
    with pytest.raises(ValueError, match="concept must be one of .*golden_gate"):
        concepts.passages("brooklyn_bridge")
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        concepts.all_passages(repeats=0)
    assert len(concepts.all_passages(["golden_gate"], repeats=2)) == 2 * len(concepts.passages("golden_gate"))


def test_generated_slices_join_the_training_mix_only_when_asked():
    generated = concepts.generated_passages("golden_gate")
    assert len(generated) >= 100, "assets/concepts/golden_gate.generated.txt is missing or short"
    assert "golden_gate.generated" not in concepts.available()
    written = concepts.all_passages(["golden_gate"])
    both = concepts.all_passages(["golden_gate"], generated=True)
    assert written == concepts.passages("golden_gate")
    assert both == written + generated
    assert not set(generated) & set(written)


@pytest.mark.parametrize("name", concepts.available())
def test_generated_passages_never_contain_held_out_sentences(name):
    generated = " ".join(concepts.generated_passages(name))
    assert generated, f"{name} has no generated slice"
    for sentence in concepts.heldout(name).concept + concepts.heldout(name).unrelated:
        assert sentence not in generated
