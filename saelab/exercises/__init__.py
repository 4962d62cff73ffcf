"""Checkers for the lessons' exercises, one module per lesson, and the learner/solution notebook pair.

A checker runs the learner's function and the reference on the same inputs. A wrong answer raises
``ExerciseError`` with a hint that names the likely mistake; an exercise not attempted yet (its body still
raises ``NotImplementedError``) prints a notice and lets the lesson go on with the library's reference.
"""

from saelab.exercises.checking import ExerciseError, check_close, passed, run_learner_function

__all__ = ["ExerciseError", "check_close", "passed", "run_learner_function"]
