"""The budget of a search: epochs per trial, finished trials, time limits and failures."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hpo_trainer.base.errors import is_int, is_real

#: Failed trials that stop the workers when ``max_failures`` is left out, at the least.
MIN_FAILURES = 10


@dataclass(frozen=True)
class Budget:
    """What a search may spend: trials, epochs and time.

    Attributes:
        epochs: Epochs per trial.
        n_trials: Finished (complete or pruned) trials the study should reach in total,
            across all workers and all runs of the search. The one name of the budget:
            ``Trainer.hyp_opt`` takes it as ``iters`` (the template's name), the command
            line and ``SEARCH`` dicts also as ``trials``.
        timeout: Seconds after which a worker starts no new trial (``None``: no limit).
        trial_timeout: Seconds a trial may train; past them it stops at the next batch
            boundary and is pruned (``None``: no limit).
        max_failures: Failed trials (exceptions in user code) after which workers stop.

    """

    epochs: int
    n_trials: int
    timeout: float | None = None
    trial_timeout: float | None = None
    max_failures: int = MIN_FAILURES

    @classmethod
    def from_options(
        cls,
        *,
        epochs: Any,
        n_trials: Any,
        timeout: Any = None,
        trial_timeout: Any = None,
        max_failures: Any = None,
    ) -> tuple[Budget, list[str]]:
        """Return the budget of these options, and every problem with them.

        Args:
            epochs: Epochs per trial.
            n_trials: Finished trials the study should reach in total (required).
            timeout: Seconds after which a worker starts no new trial.
            trial_timeout: Seconds a trial may train.
            max_failures: Failed trials after which workers stop; ``None``: a quarter of
                ``n_trials``, at least :data:`MIN_FAILURES`.

        Returns:
            The budget, and one sentence per problem (empty if it is sound).

        """
        if max_failures is None:
            max_failures = (
                max(MIN_FAILURES, n_trials // 4) if is_int(n_trials, 1) else MIN_FAILURES
            )
        if is_real(trial_timeout):
            trial_timeout = float(trial_timeout)
        budget = cls(
            epochs=epochs,
            n_trials=n_trials,
            timeout=timeout,
            trial_timeout=trial_timeout,
            max_failures=max_failures,
        )
        return budget, budget.problems()

    def problems(self) -> list[str]:
        """Say which of the budget's values are out of range (empty if none)."""
        problems = []
        if not is_int(self.epochs, 1):
            problems.append(
                f"epochs must be an integer >= 1 (the epochs each trial trains), got "
                f"{self.epochs!r}"
            )
        if self.n_trials is None:
            problems.append(
                "n_trials is required: the finished trials the study should reach in total, "
                "e.g. n_trials=20 (or trials=20)"
            )
        elif not is_int(self.n_trials, 1):
            problems.append(f"iters (n_trials) must be an integer >= 1, got {self.n_trials!r}")
        if self.timeout is not None and not (is_real(self.timeout) and self.timeout > 0):
            problems.append(
                f"timeout must be a positive number of seconds after which workers start no "
                f"new trial (e.g. 3600), or None for no limit; got {self.timeout!r}"
            )
        if self.trial_timeout is not None and not (
            is_real(self.trial_timeout) and 0 < self.trial_timeout < math.inf
        ):
            problems.append(
                f"trial_timeout must be a positive, finite number of seconds a trial may "
                f"train (e.g. 600), or None for no limit; got {self.trial_timeout!r}"
            )
        if not is_int(self.max_failures, 1):
            problems.append(
                f"max_failures must be an integer >= 1 (failed trials after which workers "
                f"stop) or None, got {self.max_failures!r}"
            )
        return problems
