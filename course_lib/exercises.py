"""Auto-checks for the notebooks' exercises.

An exercise's stub returns ``None``, and its check cell calls ``check_exercise``: until the learner
fills it in, the check says so and the notebook still runs top to bottom. A hidden solution cell
after each exercise runs the same check on the solution.
"""
from __future__ import annotations

from collections.abc import Callable


def check_exercise(name: str, answer: Callable, test: Callable[[Callable], None]) -> bool:
    """Run ``test(answer)``: True when it passes, False when not attempted (``answer`` returned None);
    when wrong, an AssertionError with the test's message."""
    def watched(*args, **kwargs):
        out = answer(*args, **kwargs)
        if out is None:
            raise _NotAttempted
        return out

    try:
        test(watched)
    except _NotAttempted:
        print(f"{name}: not attempted yet. Fill in the function above, or open the hidden solution below.")
        return False
    except AssertionError as err:
        raise AssertionError(f"{name}: not quite. {err}") from None
    print(f"{name}: correct!")
    return True


def rejects(test: Callable[[Callable], None], wrong_answer: Callable) -> bool:
    """True when ``test`` fails ``wrong_answer`` with an AssertionError. Solution cells use it to show
    (and the tests to prove) that each check catches the classic mistakes the exercise is about."""
    try:
        test(wrong_answer)
    except AssertionError:
        return True
    return False


class _NotAttempted(Exception):
    pass
