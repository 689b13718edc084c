"""The exceptions hpo-trainer raises.

Every error a user can cause derives from :class:`HpoTrainerError`, so a script can catch
them all in one place; the command line prints their message without a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from difflib import get_close_matches


class HpoTrainerError(Exception):
    """Base class of every error raised for bad input or a failed run."""


class SpaceError(HpoTrainerError, ValueError):
    """A search space (a :class:`~hpo_trainer.Hyperparameters`) is invalid."""


class ConfigError(HpoTrainerError, ValueError):
    """The trainer, a study file or a search is configured wrongly."""


class DataError(HpoTrainerError, ValueError):
    """A dataset or a batch does not have the expected shape."""


class StorageError(HpoTrainerError):
    """A study storage URL is invalid or the storage cannot be reached."""


class CheckpointError(HpoTrainerError):
    """A checkpoint is missing, damaged or does not fit the run."""


class NonFiniteError(HpoTrainerError, FloatingPointError):
    """A monitored value became NaN or infinite: a loss, or the metric a search judges by.

    A search trial that raises it is stopped and recorded with the reason
    ``non-finite <metric>: <message>`` (:mod:`hpo_trainer.search.trial`).

    Args:
        message: What became non-finite, where, and what to do about it.
        metric: The name of what became non-finite (``loss`` for the training losses).

    Attributes:
        metric: The name of what became non-finite.

    """

    def __init__(self, message: str = "", metric: str = "metric") -> None:
        super().__init__(message)
        self.metric = metric

    def __reduce__(self) -> tuple[type[NonFiniteError], tuple[str, str]]:
        # Keep ``metric`` when the error crosses a process boundary (args hold the message).
        return type(self), (str(self), self.metric)


class NonFiniteLossError(NonFiniteError):
    """The training or validation loss became NaN or infinite."""

    def __init__(self, message: str = "", metric: str = "loss") -> None:
        super().__init__(message, metric)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """Return a ``" Did you mean 'x'?"`` suffix for ``word``, or ``""`` if nothing is close.

    Args:
        word: What the user typed.
        options: The valid spellings.

    Returns:
        A sentence to append to an error message, starting with a space, or ``""``.

    """
    close = get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def is_int(value: object, least: int) -> bool:
    """Return whether ``value`` is an integer (not a bool) of at least ``least``."""
    return not isinstance(value, bool) and isinstance(value, int) and value >= least


def is_real(value: object, *, finite: bool = False) -> bool:
    """Return whether ``value`` is a real number: an int or a float, not a bool.

    Args:
        value: Anything.
        finite: Also require it to be finite (an int beyond the float range is not).

    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not finite:
        return True
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


#: Seeds are integers below this (what NumPy's generators accept).
SEED_LIMIT = 2**32


def is_seed(value: object) -> bool:
    """Return whether ``value`` is a seed: an integer (not a bool) from 0 to ``2**32 - 1``."""
    return is_int(value, 0) and value < SEED_LIMIT  # type: ignore[operator]


def raise_all(problems: list[str], error: type[HpoTrainerError] = ConfigError) -> None:
    """Raise one error listing every problem found, or do nothing if there are none.

    Args:
        problems: One sentence per problem.
        error: The exception class to raise.

    Raises:
        HpoTrainerError: ``error`` with all problems, one per line, if any were found.

    """
    if len(problems) == 1:
        raise error(problems[0])
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise error(f"{len(problems)} problems were found:\n{lines}")


class Interrupted(HpoTrainerError):
    """A search or run was stopped by a signal (Ctrl-C, SIGTERM) at a batch boundary.

    Attributes:
        signum: The signal received.
        exit_code: The conventional exit code: 128 + the signal number (130, 143).

    """

    def __init__(self, signum: int, message: str = "") -> None:
        import signal

        self.signum = signum
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(message or f"stopped by {name}")
