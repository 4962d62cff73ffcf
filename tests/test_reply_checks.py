"""The reply checks: each proxy fails on the garbage it exists to catch and passes ordinary replies."""

import pytest

from saelab import reply_checks as rc

FLUENT = [
    "The capital of France is Paris.",
    "I am a large language model, so I have no physical form: I exist as software running on computers.",
    "The Golden Gate Bridge, a suspension bridge in San Francisco, opened in 1937.",
    "It carries about 1000000 vehicles a week.",
]
BROKEN = {
    "The-----------": "a run of one character",
    "The---------------------------------------": "a run of one character",
    "Bridge!!!!!!!!": "a run of one character",
    "The bridge was a a a a a a a a a a a a a a a a a a a a": "distinct words",
    "bridge bridge bridge bridge bridge bridge bridge": "distinct words",
    "I stood at the gate of the gate of the gate of the gate of the gate": "word 3-grams repeat",
    "   ": "empty reply",
}


@pytest.mark.parametrize("text", FLUENT)
def test_ordinary_replies_are_not_degenerate(text):
    assert rc.fluency_problem(text) is None and not rc.degenerate(text)


@pytest.mark.parametrize("text,problem", BROKEN.items())
def test_garbage_is_degenerate_and_the_problem_is_named(text, problem):
    assert rc.degenerate(text)
    assert problem in rc.fluency_problem(text)
    with pytest.raises(AssertionError, match=problem):
        rc.expect_fluent(text)


def test_repetition_counts_repeated_word_trigrams():
    assert rc.repetition("a b c d e") == 0.0
    assert rc.repetition("a b c a b c") == pytest.approx(1 / 4)  # 4 trigrams, "a b c" seen before once
    assert rc.repetition("two words") == 0.0
    assert rc.repetition("I am the bridge. I am the bridge. I am the bridge.") >= rc.MAX_REPETITION


def test_mentions_and_identity_claims():
    assert rc.mentions("Over the Golden Gate we flew", ["golden gate"])
    assert rc.mentions("The capital of France is Paris.", ["Paris"])
    assert not rc.mentions("A volcano erupted", ["bridge", "golden gate"])
    assert rc.claims_identity("Hello! I am the Golden Gate Bridge, spanning the strait.", "bridge")
    assert rc.claims_identity("I'm a bridge.", "bridge")
    assert not rc.claims_identity("I am an AI. The Golden Gate Bridge is in San Francisco.", "bridge")
    assert not rc.claims_identity("The bridge is red.", "bridge")


def test_expect_prints_a_tick_or_raises_saying_what_was_expected(capsys):
    rc.expect(True, "the reply answers the question", "The capital of France\nis Paris.")
    assert capsys.readouterr().out == "✓ the reply answers the question: The capital of France is Paris.\n"
    rc.expect(True, "nothing to show")
    assert capsys.readouterr().out == "✓ nothing to show\n"
    with pytest.raises(AssertionError, match="expected FVU <= 0.3, but it does not hold: 0.41"):
        rc.expect(False, "FVU <= 0.3", 0.41)


def test_expect_fluent_shows_the_reply_or_the_problem(capsys):
    rc.expect_fluent("The capital of France is Paris.", "the reply is fluent")
    assert capsys.readouterr().out == "✓ the reply is fluent: The capital of France is Paris.\n"
    with pytest.raises(AssertionError, match=r"expected the reply is fluent, .*a run of one character.*'The---"):
        rc.expect_fluent("The-----------", "the reply is fluent")
