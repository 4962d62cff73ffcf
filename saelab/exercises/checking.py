"""The shared machinery of every checker: run the learner's code, compare, explain."""

from __future__ import annotations

from typing import Any, Callable

import torch


class ExerciseError(AssertionError):
    """The learner's answer differs from the reference; the message says how and what to look at."""


class NotAttempted(Exception):
    """The exercise body still raises NotImplementedError."""


def run_learner_function(fn: Callable, *args: Any, name: str | None = None, **kwargs: Any) -> Any:
    """Call the learner's ``fn``; turn its NotImplementedError into ``NotAttempted`` and other crashes into hints."""
    label = name or getattr(fn, "__name__", "your function")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as error:
        raise NotAttempted(label) from error
    except Exception as error:  # the learner's bug: say where it happened, keep the original as the cause
        raise ExerciseError(f"{label} raised {type(error).__name__}: {error}") from error


def one_number(actual: Any, name: str, hint: str = "") -> torch.Tensor:
    """The learner's scalar answer as a 0-d tensor (a Python number is accepted); anything with more than one
    element is an ``ExerciseError`` naming its shape and, when given, what to reduce over (``hint``)."""
    if isinstance(actual, (int, float)):
        return torch.tensor(float(actual))
    if isinstance(actual, torch.Tensor) and actual.numel() != 1:
        raise ExerciseError(f"{name} should return one number, got shape {tuple(actual.shape)}"
                            + (f": {hint}" if hint else ""))
    return actual.reshape(()) if isinstance(actual, torch.Tensor) else actual


def check_close(
    actual: Any,
    expected: torch.Tensor,
    *,
    what: str,
    hints: list[tuple[torch.Tensor, str]] = (),
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Raise ``ExerciseError`` unless ``actual`` matches ``expected``.

    ``hints`` pairs the output of a typical mistake with what to say when the learner's answer equals it
    (e.g. the forward pass without its ReLU -> "did you forget the ReLU?").
    """
    if not isinstance(actual, torch.Tensor):
        raise ExerciseError(f"{what} should be a torch.Tensor, got {type(actual).__name__}")
    if actual.shape != expected.shape:
        raise ExerciseError(f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    actual = actual.detach().to(expected.dtype)
    if torch.allclose(actual, expected, atol=atol, rtol=rtol):
        return
    for mistake_output, hint in hints:
        if mistake_output.shape == actual.shape and torch.allclose(actual, mistake_output, atol=atol, rtol=rtol):
            raise ExerciseError(f"{what} is not right: {hint}")
    worst = (actual - expected).abs().max().item()
    raise ExerciseError(f"{what} differs from the reference (largest difference {worst:.3g})")


def wrong_answer(what: str, actual, expected, note: str = "") -> ExerciseError:
    """A checker's last word when no typical mistake matched: what the learner's code gave, what was expected."""
    return ExerciseError(f"{what} gave {actual}, expected {expected}{note}")


def passed(name: str) -> None:
    print(f"✔ {name}: correct")


def not_attempted(name: str) -> None:
    print(f"… {name}: not attempted yet (replace the `raise NotImplementedError` in its cell); "
          "the lesson goes on with saelab's reference implementation")


def checker(name: str) -> Callable[[Callable[..., None]], Callable[..., bool]]:
    """Decorate a checker body: print the verdict, return True when correct, False when not attempted."""

    def wrap(body: Callable[..., None]) -> Callable[..., bool]:
        def run(*args: Any, **kwargs: Any) -> bool:
            try:
                body(*args, **kwargs)
            except NotAttempted:
                not_attempted(name)
                return False
            passed(name)
            return True

        run.__name__ = body.__name__
        run.__doc__ = body.__doc__
        return run

    return wrap


def explain_prediction(name: str, guess, measured, *, correct: bool, explanation: str) -> bool | None:
    """Print how a "Predict, then run" guess compares with what the notebook measured; never raise.

    Returns None when no guess was written (the variable left at None), else whether the guess was right.
    """
    if guess is None or (isinstance(guess, str) and not guess.strip()):
        print(f"… {name}: no prediction written; measured {measured}. {explanation}")
        return None
    print(f"{'✔' if correct else '✘'} {name}: you predicted {guess!r}, measured {measured}. {explanation}")
    return correct


def letter_of(guess) -> str | None:
    return guess.strip().lower()[:1] if isinstance(guess, str) and guess.strip() else None


def guess_within(guess, answer: float, tolerance: float) -> bool:
    """Whether a "predict, then run" guess reads as a number within ``tolerance`` of ``answer`` (else False)."""
    try:
        return guess is not None and abs(float(guess) - answer) <= tolerance
    except (TypeError, ValueError):
        return False
