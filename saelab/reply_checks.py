"""Cheap offline checks of a generated reply: is it fluent, is it on topic, does it claim to be something.

These are stated proxies, not judges: a reply that passes can still be wrong, but one that fails is surely
broken. They exist so that a lesson, a test or a benchmark can say in one line what the model did, and so that
text like "The-----------" (what a broken key/value cache produced) or "a a a a a" (a clamp pushed too far)
fails loudly instead of passing as a reply.

    expect(mentions(reply, ["Paris"]), "the reply answers the question", reply)
    # prints "✓ the reply answers the question: The capital of France is Paris."  or raises AssertionError
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Fluent text repeats few word 3-grams; a collapsed reply ("a a a a", "the gate of the gate of") repeats many.
MAX_REPETITION = 0.2
# ... and uses many distinct words: under 35% of its words distinct (6 words or more) is a loop on a few of them.
MIN_DISTINCT_WORDS = 0.35
# "------", "!!!!!!", "aaaaaa": six or more of one character (digits excepted: "1000000" is a number)
_RUN_OF_ONE_CHARACTER = re.compile(r"([^\d\s])\1{5,}")
_FIRST_PERSON = re.compile(r"\b(?:i am|i'm|i’m|i was built as|my (?:physical )?form is)\b([^.!?\n]*)", re.IGNORECASE)


def words(text: str) -> list[str]:
    """Lower-cased words, punctuation dropped."""
    return re.findall(r"[\w’']+", text.lower())


def repetition(text: str) -> float:
    """Fraction of word 3-grams that already appeared earlier in the text (0: none repeated)."""
    tokens = text.split()
    grams = [tuple(tokens[i:i + 3]) for i in range(len(tokens) - 2)]
    return 0.0 if not grams else 1 - len(set(grams)) / len(grams)


def fluency_problem(text: str) -> str | None:
    """Why ``text`` is not a fluent reply, in a few words, or None when none of the proxies objects.

    The proxies, in order: empty; a run of six or more of one character; under ``MIN_DISTINCT_WORDS`` of its
    words distinct; ``MAX_REPETITION`` or more of its word 3-grams repeated (:func:`repetition`).
    """
    if not text.strip():
        return "empty reply"
    run = _RUN_OF_ONE_CHARACTER.search(text)
    if run:
        return f"a run of one character ({run.group(0)[:12]!r})"
    found = words(text)
    if len(found) >= 6 and len(set(found)) / len(found) < MIN_DISTINCT_WORDS:
        return f"only {len(set(found))} distinct words in {len(found)}"
    share = repetition(text)
    if share >= MAX_REPETITION:
        return f"{share:.0%} of its word 3-grams repeat (fluent text: under {MAX_REPETITION:.0%})"
    return None


def degenerate(text: str) -> bool:
    """True for garbage that is not a reply at all: empty, a run of one character, or looping words."""
    return fluency_problem(text) is not None


def mentions(text: str, phrases: Sequence[str]) -> bool:
    """Whether any of ``phrases`` occurs in ``text`` (case-insensitive)."""
    lowered = text.lower()
    return any(phrase.lower() in lowered for phrase in phrases)


def claims_identity(text: str, noun: str) -> bool:
    """Whether the text says, in the first person, that the speaker is ``noun`` ("I am the Golden Gate Bridge",
    "I'm a bridge", "my form is a bridge"): ``noun`` in the same sentence, after the first-person phrase."""
    noun = noun.lower()
    return any(noun in match.group(1).lower() for match in _FIRST_PERSON.finditer(text))


def expect(condition: bool, what: str, detail: object = "") -> None:
    """Print ``✓ what: detail``, or raise ``AssertionError`` saying what was expected and what came out.

    For lessons: the learner sees each key result checked in one line, and a test run of the notebook fails
    at the first expectation that does not hold. ``detail`` is what was seen, shown on one line (a reply's
    line breaks become spaces).
    """
    shown = " ".join(str(detail).split())
    shown = f": {shown}" if shown else ""
    if not condition:
        raise AssertionError(f"✗ expected {what}, but it does not hold{shown}")
    print(f"✓ {what}{shown}")


def expect_fluent(text: str, what: str = "the reply is fluent") -> None:
    """:func:`expect` that ``text`` is not :func:`degenerate`, naming the problem when it is."""
    problem = fluency_problem(text)
    expect(problem is None, what, text if problem is None else f"{problem} in {text[:120]!r}")
