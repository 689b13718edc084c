"""One worker: the loop that takes trials from a shared study until its budget is reached.

Under the budget lock a worker fails trials whose worker died (they are re-queued with the
same parameters; :class:`~hpo_trainer.search.heartbeat.HeartbeatWatch`, on every storage),
counts finished and running trials, and starts a trial only if the study's budget has room;
the lock holds only work that does not grow with the study, and the sampler runs outside it
(:class:`~hpo_trainer.search.start.TrialStarter`). It then trains the trial
(:func:`hpo_trainer.search.trial.run_trial`) outside the lock. Many workers, in one process
or on many machines, share a study this way.

A worker with nothing to start (the rest of the budget is running elsewhere) keeps looking,
because a running trial may lose its worker and be queued again; it looks less and less
often (see :func:`_loop`), so that idle workers do not load the storage the running trials
write to.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo_trainer.base.errors import Interrupted
from hpo_trainer.search.config import SearchConfig
from hpo_trainer.search.heartbeat import HeartbeatWatch
from hpo_trainer.search.start import TrialStarter
from hpo_trainer.search.strategies import make_pruner, make_sampler
from hpo_trainer.search.study import storage_of
from hpo_trainer.search.task import SearchTask
from hpo_trainer.search.trial import run_trial
from hpo_trainer.train.interrupt import StopFlag, stop_on_signals

logger = logging.getLogger(__name__)

#: The first wait of an idle worker, doubled after each look up to :data:`_MAX_WAIT`.
_FIRST_WAIT = 0.1
#: The longest wait between two looks of an idle worker (and at most a heartbeat interval).
_MAX_WAIT = 2.0
#: How often a waiting worker checks for a signal (no storage work).
_SIGNAL_CHECK = 0.1
_SEED_STRIDE = 100_003


@dataclass
class WorkerReport:
    """What one worker did, and why it stopped (``budget``, ``timeout`` or ``failures``)."""

    worker: int
    trials: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    epochs: int = 0
    stopped_by: str = "budget"


def run_worker(task: SearchTask, cfg: SearchConfig, *, worker: int = 0) -> WorkerReport:
    """Run trials on the study until its budget is reached (or the timeout passes).

    Args:
        task: What to train.
        cfg: The search configuration.
        worker: This worker's index (it offsets the sampler's seed).

    Returns:
        What this worker did.

    Raises:
        Interrupted: If SIGINT or SIGTERM arrived; the running trial was left to be retried
            from its last checkpoint.

    """
    storage = storage_of(cfg)
    seed = None if cfg.strategy.seed is None else cfg.strategy.seed + worker * _SEED_STRIDE
    study = optuna.load_study(
        study_name=cfg.identity.study_name,
        storage=storage,
        sampler=make_sampler(
            cfg.strategy.sampler, seed=seed, spaces=task.spaces, n_trials=cfg.budget.n_trials
        ),
        pruner=make_pruner(cfg.strategy.pruner, epochs=cfg.budget.epochs),
    )
    report = WorkerReport(worker)
    with stop_on_signals() as flag:
        _loop(task, cfg, study, storage, report, flag)
    return report


def _starter(cfg: SearchConfig, study: optuna.Study, storage: Any) -> TrialStarter:
    """Return what starts this worker's trials, with a heartbeat watch if trials beat."""
    durability = cfg.durability
    watch = None
    if durability.heartbeat_interval:
        watch = HeartbeatWatch(storage, durability.grace_period)
    return TrialStarter(
        study,
        storage,
        cfg.identity.storage,
        n_trials=cfg.budget.n_trials,
        max_failures=cfg.budget.max_failures,
        watch=watch,
        grace_period=durability.grace_period,
    )


def _loop(
    task: SearchTask,
    cfg: SearchConfig,
    study: optuna.Study,
    storage: Any,
    report: WorkerReport,
    flag: StopFlag,
) -> None:
    """Run the worker loop of :func:`run_worker` (see there)."""
    starter = _starter(cfg, study, storage)
    # Each look takes the study-wide lock and reads the running trials, competing with their
    # writes and with every other worker's start: an idle worker backs off
    # exponentially, up to a heartbeat interval (a dead trial cannot show sooner than that)
    # and at most _MAX_WAIT, so that a freed slot or the end of the budget is still seen
    # within seconds. Waiting on the lock itself would not do: nothing releases it when a
    # trial ends or its worker dies.
    max_wait = min(_MAX_WAIT, cfg.durability.heartbeat_interval or _MAX_WAIT)
    wait = _FIRST_WAIT
    waiting_said = False
    deadline = None if cfg.budget.timeout is None else time.monotonic() + cfg.budget.timeout
    report.stopped_by = "timeout"
    while deadline is None or time.monotonic() < deadline:
        if flag.signum is not None:
            raise Interrupted(flag.signum)
        trial, stop, running = starter.next()
        if stop is not None:
            report.stopped_by = stop
            return
        if trial is None:
            # The rest of the budget is running in other workers; one of them may die and
            # leave its trial to be retried, so wait rather than exit.
            if not waiting_said:
                logger.info(
                    "the rest of the budget is running (%d trials); waiting for it to finish, "
                    "or to be retried if its worker died",
                    running,
                )
                waiting_said = True
            _nap(wait, flag)
            wait = min(2 * wait, max_wait)
            continue
        waiting_said, wait = False, _FIRST_WAIT
        state, epochs = run_trial(task, study, trial, cfg, worker=report.worker)
        report.trials += 1
        report.epochs += epochs
        if state == TrialState.COMPLETE:
            report.complete += 1
        elif state == TrialState.PRUNED:
            report.pruned += 1
        else:
            report.failed += 1
        if flag.signum is not None:
            raise Interrupted(
                flag.signum,
                f"stopped by {signal.Signals(flag.signum).name}; trial {trial.number} will be "
                "retried from its last checkpoint when the search runs again",
            )


def _nap(seconds: float, flag: StopFlag) -> None:
    """Sleep ``seconds``, but return soon after a signal arrives (no storage work meanwhile)."""
    end = time.monotonic() + seconds
    while flag.signum is None and (left := end - time.monotonic()) > 0:
        time.sleep(min(left, _SIGNAL_CHECK))
