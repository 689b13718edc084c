"""Starting a trial: the budget decided under the study-wide lock, the sampler run outside it.

Workers that share a study keep its budget exact by deciding "is there room for one more
trial?" and starting that trial under one lock (:mod:`hpo_trainer.search.locks`). Whatever
is done under the lock, the whole fleet does one worker at a time, so the lock holds only
work whose cost does not grow with the study:

* **What a worker knows** (:class:`Ledger`): how many trials finished and failed, and which
  trials are running or waiting. A fresh worker reads the study once, before it first takes
  the lock; after that a look reads only the trials created since (their ids are past the
  last one it read) and those it last saw unfinished, each with only the attributes the
  decision needs (:func:`~hpo_trainer.search.optuna_api.read_trials_since`).
* **Under the lock** (:meth:`TrialStarter.next`): that read, the heartbeat check of the
  running trials (a dead one is failed and queued again), the budget decision, and the
  trial's row: the first waiting trial (a retry, a warm start) is claimed and marked started
  (:func:`~hpo_trainer.search.heartbeat.beat`), or a RUNNING trial is created with its start
  mark in one transaction, numbered from the ledger
  (:func:`~hpo_trainer.search.optuna_api.create_running_trial`: Optuna's own numbering
  counts the whole study).
* **Outside the lock**: the ``Trial`` is made (the sampler's ``before_trial``) and its
  parameters are sampled when the trial suggests them; a sampler such as TPE reads every
  trial there, while other workers start theirs.

Why the budget stays exact on every storage: a trial counts toward it (RUNNING, then
COMPLETE or PRUNED) only once a start made it RUNNING, and every start happens under the
lock, after a read that saw every trial started before it. That read is complete because a
study's trials get their ids in the order they are created (every creator locks the study's
row in PostgreSQL, SQLite admits one writer at a time, a journal file or Redis is one
ordered log) and a finished trial never changes again. What other workers do meanwhile
outside the lock (tell a trial, fail it, queue a retry) only lowers the count a worker acts
on, or keeps it.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from hpo_trainer.search import facts, optuna_api
from hpo_trainer.search.heartbeat import BEAT_KEY, GRACE_KEY, HeartbeatWatch, beat, start_mark
from hpo_trainer.search.locks import budget_lock
from hpo_trainer.search.storage import StorageFile

logger = logging.getLogger(__name__)


class Ledger:
    """One worker's account of a study's trials, kept up to date a few trials at a time.

    Args:
        storage: The storage as opened (behind Optuna's cache).
        study_id: The study's id in it.

    Attributes:
        finished: Trials that count toward the budget (complete or pruned).
        failures: Trials that failed by themselves (:func:`~hpo_trainer.search.facts.failures`).
        size: Trials read, in any state.
        last_id: The greatest trial id read (``-1``: none yet).

    """

    def __init__(self, storage: Any, study_id: int) -> None:
        self._storage, self._study_id = storage, study_id
        self.finished = self.failures = self.size = 0
        self.last_id = -1
        #: The running and waiting trials, by id: read again at every look.
        self._open: dict[int, FrozenTrial] = {}

    def refresh(self) -> list[FrozenTrial]:
        """Read the trials created since the last read and those unfinished then.

        Returns:
            The running trials, with their heartbeat attributes.

        """
        changed = optuna_api.read_trials_since(
            self._storage,
            self._study_id,
            after=self.last_id,
            among=self._open,
            user_keys=(facts.FAILURE_KEY,),
            system_keys=(BEAT_KEY, GRACE_KEY),
        )
        before = self.last_id
        for trial in changed:
            tid = optuna_api.trial_id(trial)
            if tid > before:
                self.size += 1
                self.last_id = max(self.last_id, tid)
            self._open.pop(tid, None)
            if not trial.state.is_finished():
                self._open[tid] = trial
            elif trial.state in facts.FINISHED:
                self.finished += 1
            elif facts.failed_by_itself(trial):
                self.failures += 1
        return self.running

    @property
    def running(self) -> list[FrozenTrial]:
        """The trials running at the last read."""
        return [t for t in self._open.values() if t.state == TrialState.RUNNING]

    @property
    def waiting(self) -> list[FrozenTrial]:
        """The trials waiting at the last read, in the order they are taken (by number)."""
        waiting = [t for t in self._open.values() if t.state == TrialState.WAITING]
        return sorted(waiting, key=lambda t: t.number)


class Start(NamedTuple):
    """One look at the study: ``trial, stop, running = starter.next()``.

    Attributes:
        trial: The trial started, or ``None``.
        stop: Why the worker should stop (``budget`` or ``failures``), or ``None``.
        running: How many trials were running before this start.

    """

    trial: optuna.Trial | None
    stop: str | None
    running: int


class TrialStarter:
    """Starts one worker's trials on a shared study (see the module docs).

    Args:
        study: The study, loaded with this worker's sampler.
        storage: The storage as opened (behind Optuna's cache).
        url: The storage's URL (its budget lock and file).
        n_trials: The budget: finished trials the study should reach.
        max_failures: Stop once this many trials failed by themselves.
        watch: Finds the running trials whose worker died (``None``: no heartbeat).
        grace_period: Recorded on each trial started (with ``watch``): how long its
            watchers wait for a beat.

    Attributes:
        lock: The budget lock.
        ledger: What this worker knows of the study.

    """

    def __init__(
        self,
        study: optuna.Study,
        storage: Any,
        url: str,
        *,
        n_trials: int,
        max_failures: int,
        watch: HeartbeatWatch | None = None,
        grace_period: float | None = None,
    ) -> None:
        self.lock = budget_lock(url, storage, study.study_name)
        self.ledger = Ledger(storage, optuna_api.study_id(study))
        self._study, self._storage, self._file = study, storage, StorageFile(url)
        self._n_trials, self._max_failures = n_trials, max_failures
        self._watch, self._grace = watch, grace_period
        self._caught_up = False

    def catch_up(self) -> None:
        """Read the whole study, outside the lock: a fresh worker's one long read."""
        self._file.check()  # before any storage call: a lost file must not be recreated
        self.ledger.refresh()
        self._caught_up = True

    def next(self) -> Start:
        """Start a trial if the budget has room: decided under the lock, sampled outside.

        Returns:
            The trial started (if any), and whether to stop.

        """
        if not self._caught_up:
            self.catch_up()
        with self.lock:
            self._file.check()
            trial_id, stop, running = self._decide()
        trial = None if trial_id is None else optuna_api.open_trial(self._study, trial_id)
        return Start(trial, stop, running)

    def _decide(self) -> tuple[int | None, str | None, int]:
        """Under the lock: look, then start a trial if the budget has room (its id)."""
        running = len(self._look())
        done = self.ledger.finished
        if done >= self._n_trials:
            return None, "budget", running
        if self.ledger.failures >= self._max_failures:
            logger.error(
                "stopping: %d trials failed (max_failures=%d); see their 'failure' attribute",
                self.ledger.failures,
                self._max_failures,
            )
            return None, "failures", running
        if done + running >= self._n_trials:
            return None, None, running
        return self._claim(), None, running

    def _look(self) -> list[FrozenTrial]:
        """Bring the ledger up to date, failing dead trials; return the running trials."""
        if self._watch is None:
            return self.ledger.refresh()
        if self._watch.check(self._study, self.ledger.refresh):
            return self.ledger.refresh()  # the failed trials, and their retries queued
        return self.ledger.running

    def _claim(self) -> int:
        """Make a trial RUNNING: the first waiting one, else a new one; return its id."""
        for waiting in self.ledger.waiting:
            trial_id = optuna_api.trial_id(waiting)
            try:
                if self._storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                    break
            except UpdateFinishedTrialError:
                continue  # failed meanwhile by something other than a worker
        else:
            # A new trial's row comes with its start mark, in one transaction.
            return optuna_api.create_running_trial(
                self._storage,
                optuna_api.study_id(self._study),
                known=self.ledger.size,
                after=self.ledger.last_id,
                system_attrs=start_mark(self._grace) if self._watch is not None else None,
            )
        if self._watch is not None:
            # Still under the lock: a trial must never sit RUNNING without a sign of life, or
            # a watcher would give its worker three grace periods instead of one.
            beat(self._storage, trial_id, self._grace)
        return trial_id
