"""Heartbeats: how a worker shows that its trial is alive, and how dead ones are found.

A running trial beats from the moment it is started (under the budget lock) until it is
told. Optuna fails trials whose heartbeat went stale and re-queues them with their
parameters; :func:`fail_silent_trials` also catches trials that never sent a beat.
"""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Any

import optuna
from optuna.trial import TrialState

logger = logging.getLogger(__name__)

#: Seconds between a running trial's heartbeats.
INTERVAL = 5
#: Heartbeats a trial may miss before it counts as dead (the grace period is this many
#: intervals).
GRACE_BEATS = 4
#: How often a trial whose worker died is retried before it is given up.
MAX_RETRY = 3


class Heartbeat:
    """Records a running trial's heartbeat every ``interval`` seconds, in a thread."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        # The study's storage may be Optuna's caching wrapper; it passes heartbeats through.
        interval = getattr(self._storage, "get_heartbeat_interval", lambda: None)()
        if interval:
            self._storage.record_heartbeat(self._trial_id)
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception as exc:  # a missed beat is not worth killing the trial
                logger.warning("heartbeat failed: %s", exc)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def beat(storage: Any, trial_id: int) -> None:
    """Record one heartbeat of a trial, if the storage keeps heartbeats."""
    if getattr(storage, "get_heartbeat_interval", lambda: None)():
        storage.record_heartbeat(trial_id)


def fail_silent_trials(study: optuna.Study, storage: Any, older_than: float) -> None:
    """Fail and re-queue RUNNING trials that never sent a heartbeat and are old.

    Optuna only fails trials whose heartbeat went stale; a worker killed between starting
    a trial and its first heartbeat (or a process without heartbeats) would otherwise
    leave a RUNNING trial that blocks the budget forever.
    """
    from sqlalchemy import DateTime, Integer, text

    try:
        with storage.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT t.trial_id, t.datetime_start FROM trials t "
                    "JOIN studies s ON s.study_id = t.study_id "
                    "WHERE s.study_name = :name AND t.state = 'RUNNING' AND NOT EXISTS "
                    "(SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)"
                ).columns(trial_id=Integer, datetime_start=DateTime),  # SQLite stores text
                {"name": study.study_name},
            ).fetchall()
    except Exception as exc:  # Optuna's schema is not ours: never let this stop a worker
        logger.debug("cannot look for trials without heartbeat: %s", exc)
        return
    now = datetime.datetime.now()
    retry = storage.get_heartbeat_stale_trial_callback()
    for trial_id, started in rows:
        if started is None or (now - started).total_seconds() < older_than:
            continue
        if storage.set_trial_state_values(trial_id, TrialState.FAIL):
            logger.warning("trial %d never sent a heartbeat; failed and re-queued", trial_id)
            if retry is not None:
                retry(study, storage.get_trial(trial_id))


class Requeue:
    """Queue a failed trial again: same parameters, its epochs so far, its retry history.

    The one way a trial is retried, whether its worker died (Optuna calls this as the
    storage's stale-trial callback) or was stopped by a signal. Like Optuna's own retry
    callback, but the new attempt does not inherit the failed attempt's user attributes
    (its worker, host, reason for stopping): it records its own.

    Args:
        max_retry: Give up on a trial after this many retries (``None``: never).

    """

    def __init__(self, max_retry: int | None = None) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Add the WAITING copy of ``trial`` to ``study``."""
        system_attrs: dict[str, Any] = {"failed_trial": trial.number, "retry_history": []}
        system_attrs.update(trial.system_attrs)
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
