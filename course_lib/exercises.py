"""Auto-checks for the notebooks' exercises.

An exercise cell defines a function whose stub returns ``None``; its check cell calls
``check_exercise``. Until the learner fills it in, the check says so and moves on (so the
notebook still runs top to bottom); once it returns something, the test must pass. Each
exercise is followed by a hidden solution cell that runs the same check on the solution.
"""
from __future__ import annotations

from collections.abc import Callable


def check_exercise(name: str, answer: Callable, test: Callable[[Callable], None]) -> bool:
    """Run ``test(answer)``. Return True when it passes, False when not attempted; raise when wrong.

    ``test`` raises AssertionError with a helpful message when the answer is wrong. An answer
    that returns None (the stub) counts as not attempted.
    """
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
    """True when ``test`` fails ``wrong_answer`` with an AssertionError: a check that cannot tell a
    classic mistake from the right answer checks nothing. Solution cells use it to show (and the
    tests to prove) that each check catches the mistakes the exercise is about."""
    try:
        test(wrong_answer)
    except AssertionError:
        return True
    return False


class _NotAttempted(Exception):
    pass
