"""One worker: the loop that takes trials from a shared study until its budget is reached.

Under the budget lock a worker fails trials whose worker died (they are re-queued with the
same parameters), counts finished and running trials, and starts a trial only if the
study's budget has room. It then trains the trial (:func:`hpo_trainer.search.trial.run_trial`)
outside the lock. Many workers, in one process or on many machines, share a study this way.
"""

from __future__ import annotations

import logging
import signal
import time
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo_trainer.errors import Interrupted
from hpo_trainer.search import facts
from hpo_trainer.search.config import SearchConfig
from hpo_trainer.search.heartbeat import beat, fail_silent_trials
from hpo_trainer.search.locks import budget_lock
from hpo_trainer.search.storage import StorageFile
from hpo_trainer.search.strategies import make_pruner, make_sampler
from hpo_trainer.search.study import storage_of
from hpo_trainer.search.task import SearchTask
from hpo_trainer.search.trial import run_trial
from hpo_trainer.train.interrupt import StopFlag, stop_on_signals

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.1
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
    seed = None if cfg.seed is None else cfg.seed + worker * _SEED_STRIDE
    study = optuna.load_study(
        study_name=cfg.study_name,
        storage=storage,
        sampler=make_sampler(cfg.sampler, seed=seed, spaces=task.spaces, n_trials=cfg.n_trials),
        pruner=make_pruner(cfg.pruner, epochs=cfg.epochs),
    )
    report = WorkerReport(worker)
    with stop_on_signals() as flag:
        _loop(task, cfg, study, storage, report, flag)
    return report


def _next_trial(
    cfg: SearchConfig, study: optuna.Study, storage: Any
) -> tuple[Any, str | None, int]:
    """Under the budget lock: fail dead trials, then start a trial if the budget has room.

    ``storage`` is the storage as opened (Optuna wraps it in a cache inside the study).

    Returns:
        The trial (or ``None``), why the worker should stop (or ``None``), and how many
        trials are running.

    """
    if cfg.heartbeat_interval and isinstance(storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)
        fail_silent_trials(study, storage, 3 * cfg.grace_period)
    trials = study.get_trials(deepcopy=False)
    done, running = facts.finished(trials), len(facts.running(trials))
    if done >= cfg.n_trials:
        return None, "budget", running
    failed = len(facts.failures(trials))
    if failed >= cfg.max_failures:
        logger.error(
            "stopping: %d trials failed (max_failures=%d); see their 'failure' attribute",
            failed,
            cfg.max_failures,
        )
        return None, "failures", running
    if done + running >= cfg.n_trials:
        return None, None, running
    with warnings.catch_warnings():
        # We run the heartbeat ourselves (see Heartbeat), which Optuna cannot know.
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        trial = study.ask()
    if cfg.heartbeat_interval:
        # Beat at once, still under the lock: a trial must never sit RUNNING without a
        # heartbeat, or nothing could tell that its worker died.
        beat(storage, trial._trial_id)
    return trial, None, running


def _loop(
    task: SearchTask,
    cfg: SearchConfig,
    study: optuna.Study,
    storage: Any,
    report: WorkerReport,
    flag: StopFlag,
) -> None:
    """Run the worker loop of :func:`run_worker` (see there)."""
    lock = budget_lock(cfg.storage, storage, cfg.study_name)
    file = StorageFile(cfg.storage)
    waiting_said = False
    deadline = None if cfg.timeout is None else time.monotonic() + cfg.timeout
    report.stopped_by = "timeout"
    while deadline is None or time.monotonic() < deadline:
        if flag.signum is not None:
            raise Interrupted(flag.signum)
        with lock:
            file.check()  # before any storage call: a lost file must not be recreated
            trial, stop, running = _next_trial(cfg, study, storage)
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
            time.sleep(_POLL_SECONDS)
            continue
        waiting_said = False
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
