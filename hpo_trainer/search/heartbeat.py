"""Heartbeats: how a worker shows that its trial is alive, and how dead ones are found.

One mechanism on every storage (SQLite, PostgreSQL, a journal file, Redis), built on
nothing but trial system attributes, which every Optuna storage keeps:

* A worker starts a trial under the budget lock and records, in the same breath, the grace
  period it allows the trial (:func:`beat`). From then until the trial is told, a thread
  counts the trial's heartbeats in the storage every ``heartbeat_interval`` seconds
  (:class:`Heartbeat`).
* Workers look at the running trials whenever they read the study under the budget lock
  (:class:`HeartbeatWatch`). A trial whose count did not change for longer than its grace
  period, **by the watching worker's own monotonic clock**, lost its worker: it is failed
  and queued again with its parameters (:class:`Requeue`), and the retry resumes from the
  trial's last per-epoch checkpoint.

Why a counter and not a timestamp: workers on several machines have clocks that differ,
and a journal file or Redis has no clock of its own to compare against. A counter that must
advance needs no clock but the watcher's: if two reads of the storage at least a grace
period apart (the end of the first, the start of the second) show the same count, no beat
landed in between, and a live worker beats more often than that. So a live trial is never
failed for a clock that is off, and a fresh worker never fails a trial on its first read:
it judges a trial once it has watched it for a grace period (while it waits for the rest of
the budget, as soon as that has passed; else when it next starts a trial).

Optuna's own heartbeat (``RDBStorage(heartbeat_interval=...)`` and ``fail_stale_trials``)
exists for databases only, and compares database timestamps; it is not used.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from hpo_trainer.base.errors import is_real
from hpo_trainer.search import optuna_api

logger = logging.getLogger(__name__)

#: Seconds between a running trial's heartbeats.
INTERVAL = 5
#: Heartbeats a trial may miss before it counts as dead (the grace period is this many
#: intervals).
GRACE_BEATS = 4
#: How often a trial whose worker died is retried before it is given up.
MAX_RETRY = 3
#: The trial system attribute that counts its heartbeats (1, 2, 3, ...).
BEAT_KEY = "hpo:heartbeat"
#: The trial system attribute with the grace period its worker allows it (seconds), written
#: when the trial starts: a trial started with a longer grace period than the watcher's is
#: judged by its own, so workers started with other options never fail each other's trials.
GRACE_KEY = "hpo:grace_period"
#: A running trial with neither attribute never sent a sign of life (its worker died between
#: starting it and recording its start, or something other than a worker started it): it
#: is given this many grace periods.
SILENT_GRACES = 3


class Heartbeat:
    """Counts a running trial's heartbeats in the storage every ``interval`` seconds, in a thread.

    The first beat is recorded on entering, the rest by a daemon thread until the block ends.

    Args:
        storage: The study's storage (Optuna's caching wrapper passes the writes through).
        trial_id: The storage's id of the running trial.
        interval: Seconds between beats; ``None`` or ``0``: no heartbeat.
        wait: What the thread calls with ``interval`` before each beat after the first;
            ``True`` stops it. By default it waits for the block to end, for at most
            ``interval`` seconds; tests pass their own to drive the beats.

    """

    def __init__(
        self,
        storage: Any,
        trial_id: int,
        interval: float | None,
        *,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._count = 0
        self._stop = threading.Event()
        self._wait = self._stop.wait if wait is None else wait
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self._interval:
            self._beat()
            self._thread = threading.Thread(
                target=self._run, name=f"heartbeat-{self._trial_id}", daemon=True
            )
            self._thread.start()
        return self

    def _beat(self) -> bool:
        """Record one beat; return ``False`` once the trial is finished."""
        self._count += 1
        try:
            self._storage.set_trial_system_attr(self._trial_id, BEAT_KEY, self._count)
        except UpdateFinishedTrialError:
            return False  # told between two beats: nothing is left to keep alive
        except Exception as exc:  # a missed beat is not worth killing the trial
            logger.warning("heartbeat of trial id %d failed: %s", self._trial_id, exc)
        return True

    def _run(self) -> None:
        while not self._wait(self._interval) and self._beat():
            pass

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def start_mark(grace_period: float | None = None) -> dict[str, Any]:
    """Return the system attributes that record a trial's start alive (see :func:`beat`).

    The trial-start path writes them with the new trial's row, in one transaction.
    """
    return {GRACE_KEY: grace_period}


def beat(storage: Any, trial_id: int, grace_period: float | None = None) -> None:
    """Record that a trial started alive, and the grace period its worker allows it.

    Called under the budget lock right after the trial is asked for, so that a trial never
    sits RUNNING without a sign of life (:data:`GRACE_KEY`) longer than one write takes.

    Args:
        storage: The study's storage.
        trial_id: The storage's id of the trial just started.
        grace_period: Seconds without a heartbeat after which the trial counts as dead
            (``None``: each watcher's own).

    """
    for key, value in start_mark(grace_period).items():
        storage.set_trial_system_attr(trial_id, key, value)


class HeartbeatWatch:
    """Finds the running trials whose heartbeat stopped, and fails and re-queues them.

    One per worker: it remembers each running trial's count from its earlier reads and
    when it first saw it (see the module docs for the rule and why it needs no shared
    clock). Call :meth:`read` or :meth:`check` under the budget lock.

    Args:
        storage: The storage as opened (Optuna may wrap it in a cache inside the study).
        grace_period: Seconds without a heartbeat after which a trial counts as dead, unless
            the trial's own (:data:`GRACE_KEY`) is longer.
        max_retry: Give up on a trial after this many retries (``None``: never).
        clock: Monotonic seconds; tests pass their own.

    """

    def __init__(
        self,
        storage: Any,
        grace_period: float,
        *,
        max_retry: int | None = MAX_RETRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._storage = storage
        self.grace_period = grace_period
        self._requeue = Requeue(max_retry=max_retry)
        self._clock = clock
        #: trial id -> (its count, the end of the first read that showed that count)
        self._seen: dict[int, tuple[Any, float]] = {}

    def read(self, study: optuna.Study) -> list[FrozenTrial]:
        """Return the study's trials, after failing and re-queueing those whose worker died.

        The trials are read once, and read again only when a dead one was failed.
        """
        trials: list[FrozenTrial] = []

        def every() -> list[FrozenTrial]:
            trials.extend(study.get_trials(deepcopy=False))
            return trials

        return study.get_trials(deepcopy=False) if self.check(study, every) else trials

    def check(self, study: optuna.Study, read: Callable[[], Sequence[FrozenTrial]]) -> bool:
        """Fail and re-queue the dead among the trials that ``read`` returns.

        Args:
            study: The study (a dead trial's retry is queued in it).
            read: Reads the trials to judge, once, between two looks at this watch's clock
                (at least the running ones, with their :data:`BEAT_KEY` and
                :data:`GRACE_KEY` system attributes).

        Returns:
            Whether a trial was failed (the study has changed since ``read``).

        """
        started = self._clock()
        trials = read()
        dead = self._judge(trials, started=started, ended=self._clock())
        return any([self._fail(study, trial, silent, grace) for trial, silent, grace in dead])

    def _judge(
        self, trials: Sequence[FrozenTrial], *, started: float, ended: float
    ) -> list[tuple[FrozenTrial, float, float]]:
        """Note each running trial's count; return the dead ones, how long silent, and grace.

        A count was in the storage by the end of the read that first showed it; the same
        count in a read that started more than a grace period later means no beat landed
        for that long.
        """
        seen: dict[int, tuple[Any, float]] = {}
        dead = []
        for trial in trials:
            if trial.state != TrialState.RUNNING:
                continue
            count = trial.system_attrs.get(BEAT_KEY)
            last = self._seen.get(optuna_api.trial_id(trial))
            since = last[1] if last is not None and last[0] == count else ended
            seen[optuna_api.trial_id(trial)] = (count, since)
            grace = self._grace_of(trial)
            if started - since > grace:
                dead.append((trial, started - since, grace))
        self._seen = seen  # finished trials are forgotten
        return dead

    def _grace_of(self, trial: FrozenTrial) -> float:
        attrs = trial.system_attrs
        own = attrs.get(GRACE_KEY)
        grace = self.grace_period
        if is_real(own, finite=True):
            grace = max(grace, own)
        if BEAT_KEY not in attrs and GRACE_KEY not in attrs:
            grace *= SILENT_GRACES
        return grace

    def _fail(self, study: optuna.Study, trial: FrozenTrial, silent: float, grace: float) -> bool:
        """Fail ``trial`` and queue it again; ``False`` if another worker or its own was first."""
        try:
            if not self._storage.set_trial_state_values(
                optuna_api.trial_id(trial), TrialState.FAIL
            ):
                return False
        except UpdateFinishedTrialError:
            return False  # it was told meanwhile, or another worker failed it first
        logger.warning(
            "trial %d sent no heartbeat for %.0f s (grace period %g s): its worker is gone. It "
            "is failed and queued again, to resume from its last checkpoint",
            trial.number,
            silent,
            grace,
        )
        self._requeue(study, self._storage.get_trial(optuna_api.trial_id(trial)))
        return True


class Requeue:
    """Queue a failed trial again: same parameters, its epochs so far, its retry history.

    The one way a trial is retried, whether its worker died (:class:`HeartbeatWatch` calls
    it) or was stopped by a signal. Like Optuna's own retry callback, but the new attempt
    does not inherit the failed attempt's user attributes (its worker, host, reason for
    stopping) nor its heartbeat: it records its own.

    Args:
        max_retry: Give up on a trial after this many retries (``None``: never).

    """

    def __init__(self, max_retry: int | None = None) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Add the WAITING copy of ``trial`` to ``study``."""
        system_attrs: dict[str, Any] = {"failed_trial": trial.number, "retry_history": []}
        system_attrs.update(trial.system_attrs)
        for key in (BEAT_KEY, GRACE_KEY):  # the new attempt beats for itself
            system_attrs.pop(key, None)
        system_attrs["retry_history"] = [*system_attrs["retry_history"], trial.number]
        if self.max_retry is not None and len(system_attrs["retry_history"]) > self.max_retry:
            logger.warning(
                "trial %d failed %d times; not retried again",
                trial.number,
                len(system_attrs["retry_history"]),
            )
            return
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                system_attrs=system_attrs,
                intermediate_values=trial.intermediate_values,
            )
        )


def root_number(trial: optuna.trial.FrozenTrial) -> int:
    """Return the number of the first attempt of ``trial`` (itself unless it is a retry)."""
    root = trial.system_attrs.get("failed_trial")
    return trial.number if root is None else int(root)
