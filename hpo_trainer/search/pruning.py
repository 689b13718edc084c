"""Pruning: the callback that reports every epoch to a trial, and fast decisions.

Optuna's ``trial.should_prune()`` re-reads the running trial and every completed trial
from the storage on each call, although finished trials never change. For the pruners
whose decision only needs the completed trials' intermediate values (median, percentile,
patient around either, none), :class:`FastReporter` keeps the trial's values in memory,
reads the completed trials once when the trial starts and then at most every ``ttl``
seconds, and calls the same Optuna pruner. Other pruners (successive halving, Hyperband)
keep their own state in the storage and go through ``trial.should_prune()``.

In a multi-objective study ``Trial.report`` and ``Trial.should_prune`` raise
``NotImplementedError``. There the reporter is given the direction of the one objective it
reports (``prune_on``): it writes each value through the storage, as ``Trial.report``
itself does, and asks the pruner with a view of the study whose ``direction`` is that
objective's. Every pruner but Hyperband reads only ``direction``, the trials and the
storage from the study, so this is how they prune on one objective (Hyperband builds its
own per-bracket studies from the storage; the search configuration refuses it there).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo_trainer.base.errors import NonFiniteError
from hpo_trainer.search import optuna_api
from hpo_trainer.train.callback import Callback

if TYPE_CHECKING:
    from hpo_trainer.train.state import FitState

_COMPLETE = (TrialState.COMPLETE,)


def _reads_only_completed(pruner: optuna.pruners.BasePruner) -> bool:
    if isinstance(pruner, optuna.pruners.PatientPruner):
        inner = optuna_api.wrapped_pruner(pruner)
        return inner is None or _reads_only_completed(inner)
    return isinstance(
        pruner,
        (optuna.pruners.MedianPruner, optuna.pruners.PercentilePruner, optuna.pruners.NopPruner),
    )


class _StudyView:
    """The study as a pruner sees it, with the completed trials served from memory."""

    def __init__(self, study: optuna.Study, ttl: float, direction: str | None = None) -> None:
        self._study = study
        self._ttl = ttl
        if direction is not None:  # the one objective pruned on, in a multi-objective study
            self.direction = optuna.study.StudyDirection[direction.upper()]
            # a pruner that reads ``directions[0]`` must see the same one objective
            self.directions = [self.direction]
        self._completed: list[FrozenTrial] = []
        self._read_at = -float("inf")

    def get_trials(
        self, deepcopy: bool = True, states: tuple[TrialState, ...] | None = None
    ) -> list[FrozenTrial]:
        if states is not None and tuple(states) == _COMPLETE and not deepcopy:
            now = time.monotonic()
            if now - self._read_at > self._ttl:
                self._completed = self._study.get_trials(deepcopy=False, states=_COMPLETE)
                self._read_at = now
            return self._completed
        return self._study.get_trials(deepcopy=deepcopy, states=states)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class FastReporter:
    """Reports a trial's epochs to Optuna and asks its pruner cheaply (see module docs).

    Args:
        study: The study the trial belongs to.
        trial: The running trial.
        ttl: Seconds for which the completed trials read from the storage are reused.
        direction: In a multi-objective study, the direction of the objective reported
            (see module docs); ``None`` in a single-objective study.

    """

    def __init__(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        ttl: float = 2.0,
        *,
        direction: str | None = None,
    ) -> None:
        self._study = study
        self._trial = trial
        self._pruner = study.pruner
        self._multi = len(study.directions) > 1
        if self._multi and direction is None:
            raise ValueError("a multi-objective study's reporter needs the reported direction")
        self._fast = _reads_only_completed(self._pruner)
        self._never = isinstance(self._pruner, optuna.pruners.NopPruner)
        self._view = _StudyView(study, ttl, direction if self._multi else None)
        base = optuna_api.stored_trial(study, trial)
        self._base = base
        # A retry starts with its first attempt's values (inherited by Optuna's retry).
        self._values: dict[int, float] = dict(base.intermediate_values)
        if self._fast and not self._never:
            self._view.get_trials(deepcopy=False, states=_COMPLETE)  # read them now

    def report(self, value: float, step: int) -> None:
        """Record ``value`` for epoch ``step`` in the storage (a step is stored once)."""
        if not self._multi:
            self._trial.report(value, step)
        elif step not in self._values:  # what Trial.report does, which refuses several objectives
            optuna_api.report_value(self._study, self._trial, step, value)
        self._values.setdefault(step, float(value))

    def should_prune(self) -> bool:
        """Ask the study's pruner whether the trial should stop now."""
        if self._never:
            return False
        if not self._fast:
            if self._multi:  # Trial.should_prune refuses several objectives
                latest = optuna_api.stored_trial(self._study, self._trial)
                return self._pruner.prune(self._view, latest)  # type: ignore[arg-type]
            return self._trial.should_prune()
        b = self._base
        frozen = FrozenTrial(
            number=b.number,
            state=TrialState.RUNNING,
            value=None,
            datetime_start=b.datetime_start,
            datetime_complete=None,
            params=b.params,
            distributions=b.distributions,
            user_attrs={},
            system_attrs=b.system_attrs,
            intermediate_values=self._values,
            trial_id=optuna_api.trial_id(b),
        )
        return self._pruner.prune(self._view, frozen)  # type: ignore[arg-type]


class Reporter(Protocol):
    """What pruning needs from a trial: ``optuna.Trial`` fits, and so does a faster stand-in."""

    def report(self, value: float, step: int) -> None:
        """Record the monitored value after an epoch."""

    def should_prune(self) -> bool:
        """Whether the trial should stop now."""


class PruningCallback(Callback):
    """Report the monitored metric to an Optuna trial every epoch; prune when it says so.

    A non-finite value of the metric stops the trial as a non-finite loss does (the training
    loop checks only the losses): a trial judged by a NaN can never be judged.

    Args:
        trial: An ``optuna.Trial`` (or anything with ``report`` and ``should_prune``).
        metric: The metric to report, e.g. ``"val/loss"``.

    """

    def __init__(self, trial: Reporter, metric: str = "val/loss") -> None:
        self.trial = trial
        self.metric = metric

    def on_epoch_end(self, state: FitState) -> None:
        """Report, then raise ``optuna.TrialPruned`` if the pruner says so.

        Raises:
            NonFiniteError: If the metric is NaN or infinite (it is not reported).
            optuna.TrialPruned: If the pruner says the trial should stop.

        """
        value = state.metrics[self.metric]
        if not math.isfinite(value):
            state.stop_reason = f"{self.metric}={value} in epoch {state.epoch}"
            raise NonFiniteError(
                f"{state.stop_reason}; the trial is judged by {self.metric}, so it stops here: "
                "check the metric's function and the data for NaNs, or lower the learning rate",
                self.metric,
            )
        self.trial.report(value, state.epoch)
        if self.trial.should_prune():
            state.stop_reason = f"pruned after epoch {state.epoch} ({self.metric}={value:.6g})"
            raise optuna.TrialPruned(state.stop_reason)
