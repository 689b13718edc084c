"""The search: the objective, study create/load, worker processes, the shared budget,
heartbeats, retries from checkpoints, and cleaning up after trials.

A worker loops: under the budget lock it fails trials whose worker died (they are re-queued
with the same parameters), counts finished and running trials, and starts a trial only if
the study's budget has room. A trial suggests every target's parameters, builds a fresh
model, trains it with :func:`hpo_trainer.loop.fit`, reports the monitored metric every
epoch (pruning enters as a callback), checkpoints every epoch, and ends COMPLETE, PRUNED or
FAIL with the reason recorded.

The value of a completed trial is the **best** epoch's value of the monitored metric (the
lowest validation loss by default), with that epoch recorded as ``best_epoch``.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import signal
import time
import traceback
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import torch
from optuna.trial import TrialState

from hpo_trainer import checkpoint
from hpo_trainer.callbacks import CheckpointCallback, PruningCallback, TensorBoardCallback
from hpo_trainer.errors import (
    CheckpointError,
    ConfigError,
    HpoTrainerError,
    Interrupted,
    NonFiniteLossError,
    raise_all,
)
from hpo_trainer.heartbeat import Heartbeat, Requeue, beat, fail_silent_trials, root_number
from hpo_trainer.interrupt import FLAG, StopFlag, stop_on_signals
from hpo_trainer.pruning import FastReporter
from hpo_trainer.storage import budget_lock, default_url, open_storage, parse_url
from hpo_trainer.strategies import check_pruner, check_sampler, make_pruner, make_sampler

if TYPE_CHECKING:
    from hpo_trainer.trainer import Trainer

logger = logging.getLogger(__name__)

_DONE = (TrialState.COMPLETE, TrialState.PRUNED)
_POLL_SECONDS = 0.1
_SEED_STRIDE = 100_003
#: Trial numbers whose checkpoints this process removed, by (storage, study, runs dir).
_REMOVED: dict[tuple[str, str, str], set[int]] = {}


@dataclass(frozen=True)
class SearchConfig:
    """Everything a worker needs besides the trainer (picklable, sent to worker processes).

    Attributes:
        study_name: The study's name.
        storage: The storage URL.
        epochs: Epochs per trial.
        n_trials: Finished (complete or pruned) trials the study should reach in total.
        metric: The metric reported and optimised.
        direction: ``minimize`` or ``maximize``.
        sampler: A sampler name or object.
        pruner: A pruner name or object.
        seed: The base seed (worker ``i`` samples with ``seed + i * stride``).
        timeout: Seconds after which a worker starts no new trial.
        max_failures: Failed trials (exceptions in user code) after which workers stop.
        keep_checkpoints: Checkpoints of this many best trials are kept; others are removed.
        runs_dir: Where trial folders go: ``runs_dir/<study>/trial-<n>/``.
        heartbeat_interval: Seconds between heartbeats of a running trial.
        grace_period: Seconds without a heartbeat before a trial counts as dead.

    """

    study_name: str
    storage: str
    epochs: int
    n_trials: int
    metric: str = "val/loss"
    direction: str = "minimize"
    sampler: Any = "tpe"
    pruner: Any = "median"
    seed: int | None = None
    timeout: float | None = None
    max_failures: int = 10
    keep_checkpoints: int = 3
    runs_dir: str = "runs"
    heartbeat_interval: int = 5
    grace_period: int = 20
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class WorkerReport:
    """What one worker did."""

    worker: int
    trials: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    epochs: int = 0


def available_metrics(trainer: Trainer) -> list[str]:
    """Return the metrics the loop produces for ``trainer`` (accuracy for classification)."""
    names = ["train/loss", "train/acc"]
    if trainer.val_data is not None:
        names += ["val/loss", "val/acc"] + [f"val/{m}" for m in trainer._metric_fns]
    return names


def make_config(
    trainer: Trainer,
    *,
    epochs: int,
    n_trials: int,
    study_name: str | None = None,
    storage: str | None = None,
    sampler: Any = "tpe",
    pruner: Any = "median",
    seed: int | None = None,
    timeout: float | None = None,
    direction: str | None = None,
    metric: str = "val/loss",
    max_failures: int | None = None,
    keep_checkpoints: int = 3,
    heartbeat_interval: int = 5,
    grace_period: int | None = None,
    **unknown: Any,
) -> SearchConfig:
    """Check the search options together and return the worker configuration.

    Args:
        trainer: The configured trainer.
        epochs: Epochs per trial.
        n_trials: Finished trials the study should reach in total.
        study_name: The study's name (default: the trainer's name).
        storage: The storage URL (default: a SQLite file in the trainer's ``runs_dir``).
        sampler: A sampler name or object.
        pruner: A pruner name or object.
        seed: The base seed of the samplers and trials.
        timeout: Seconds after which a worker starts no new trial.
        direction: ``minimize`` or ``maximize`` (default: by the metric).
        metric: The metric reported and optimised.
        max_failures: Failed trials after which workers stop (default: a quarter of the
            budget, at least 10).
        keep_checkpoints: Checkpoints of this many best trials are kept (0 keeps none).
        heartbeat_interval: Seconds between heartbeats of a running trial.
        grace_period: Seconds without a heartbeat before a trial counts as dead (default:
            four heartbeats).
        **unknown: Nothing: any other option is reported as unknown.

    Returns:
        The configuration each worker runs with.

    Raises:
        ConfigError: Listing every bad option.

    """
    import inspect

    from hpo_trainer.errors import did_you_mean

    problems: list[str] = []
    if unknown:
        skip = ("trainer", "unknown")
        known = [n for n in inspect.signature(make_config).parameters if n not in skip]
        known.append("n_workers")
        problems.extend(
            f"unknown search option {name!r}.{did_you_mean(name, known)} "
            f"Options: {', '.join(known)}"
            for name in unknown
        )

    def is_int(value: Any, least: int) -> bool:
        return not isinstance(value, bool) and isinstance(value, int) and value >= least

    for arg, value in (("epochs", epochs), ("iters (n_trials)", n_trials)):
        if not is_int(value, 1):
            problems.append(f"{arg} must be an integer >= 1, got {value!r}")
    for check in (lambda: check_sampler(sampler), lambda: check_pruner(pruner)):
        try:
            check()
        except ConfigError as exc:
            problems.append(str(exc))
    metrics = available_metrics(trainer)
    if metric not in metrics:
        problems.append(
            f"metric {metric!r} is not produced by the training loop; choose one of "
            f"{', '.join(metrics)}"
        )
    if direction is None:
        by_acc = isinstance(metric, str) and metric.endswith("/acc")
        direction = "maximize" if by_acc else "minimize"
    if direction not in ("minimize", "maximize"):
        problems.append(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
    ):
        problems.append(f"timeout must be a positive number of seconds, got {timeout!r}")
    if seed is not None and (not is_int(seed, 0) or seed >= 2**32):
        problems.append(f"seed must be an integer in [0, 2**32 - 1] or None, got {seed!r}")
    if max_failures is not None and not is_int(max_failures, 1):
        problems.append(
            f"max_failures must be an integer >= 1 (failed trials after which workers stop) "
            f"or None, got {max_failures!r}"
        )
    if not is_int(keep_checkpoints, 0):
        problems.append(
            f"keep_checkpoints must be an integer >= 0 (checkpoints of the best trials to "
            f"keep), got {keep_checkpoints!r}"
        )
    if not is_int(heartbeat_interval, 1):
        problems.append(
            f"heartbeat_interval must be a whole number of seconds >= 1, got "
            f"{heartbeat_interval!r}"
        )
    elif grace_period is not None and (
        not is_int(grace_period, 1) or grace_period <= heartbeat_interval
    ):
        problems.append(
            f"grace_period must be a whole number of seconds longer than heartbeat_interval "
            f"({heartbeat_interval}), got {grace_period!r}"
        )
    if storage is None:
        storage = default_url(trainer.runs_dir)
    try:
        parse_url(storage)
    except HpoTrainerError as exc:
        problems.append(str(exc))
    if study_name is not None and (not isinstance(study_name, str) or not study_name.strip()):
        problems.append(f"study_name must be a non-empty string, got {study_name!r}")
    raise_all(problems)
    trainer.check()
    return SearchConfig(
        study_name=study_name or trainer.name,
        storage=storage,
        epochs=epochs,
        n_trials=n_trials,
        metric=metric,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        timeout=timeout,
        max_failures=max_failures if max_failures is not None else max(10, n_trials // 4),
        keep_checkpoints=keep_checkpoints,
        runs_dir=str(trainer.runs_dir),
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period or 4 * heartbeat_interval,
    )


def _storage(cfg: SearchConfig) -> optuna.storages.BaseStorage:
    return open_storage(
        cfg.storage, heartbeat_interval=cfg.heartbeat_interval, grace_period=cfg.grace_period
    )


def create_study(cfg: SearchConfig) -> optuna.Study:
    """Create the study, or load it if it exists (checking that its direction matches).

    Raises:
        ConfigError: If an existing study of that name optimises the other direction.

    """
    storage = _storage(cfg)
    study = optuna.create_study(
        study_name=cfg.study_name, storage=storage, direction=cfg.direction, load_if_exists=True
    )
    existing = study.direction.name.lower()
    if existing != cfg.direction:
        raise ConfigError(
            f"study {cfg.study_name!r} already exists and {existing}s; search it with "
            f"direction={existing!r}, or use another study_name"
        )
    if study.metric_names is None:
        study.set_metric_names([cfg.metric])
    if "hpo:epochs" not in study.user_attrs:
        study.set_user_attr("hpo:epochs", cfg.epochs)
        study.set_user_attr("hpo:metric", cfg.metric)
    if study.user_attrs.get("hpo:n_trials") != cfg.n_trials:
        study.set_user_attr("hpo:n_trials", cfg.n_trials)  # the budget, for status
    return study


def search(
    trainer: Trainer, *, epochs: int, n_trials: int, n_workers: int = 1, **options: Any
) -> optuna.Study:
    """Run (or continue) a search until the study has ``n_trials`` finished trials.

    Args:
        trainer: The configured trainer.
        epochs: Epochs per trial.
        n_trials: Finished trials the study should have in total, across all workers and
            all runs of this search (a re-run continues to this total).
        n_workers: Local worker processes (spawned); 1 runs in this process.
        **options: See :func:`make_config`.

    Returns:
        The study.

    Raises:
        ConfigError: If an option is invalid.

    """
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ConfigError(f"n_workers must be an integer >= 1, got {n_workers!r}")
    cfg = make_config(trainer, epochs=epochs, n_trials=n_trials, **options)
    study = create_study(cfg)
    if n_workers == 1:
        run_worker(trainer, cfg, worker=0)
    else:
        from hpo_trainer.workers import run_workers

        run_workers(trainer, cfg, n_workers=n_workers)
    return optuna.load_study(study_name=study.study_name, storage=_storage(cfg))


# -- one worker ----------------------------------------------------------------------------


def _failures(trials: list[optuna.trial.FrozenTrial]) -> int:
    """Failed trials caused by the trial itself (not by a dead worker, which is retried)."""
    return sum(1 for t in trials if t.state == TrialState.FAIL and "failure" in t.user_attrs)


def run_worker(trainer: Trainer, cfg: SearchConfig, *, worker: int = 0) -> WorkerReport:
    """Run trials on the study until its budget is reached (or the timeout passes).

    Args:
        trainer: The configured trainer.
        cfg: The search configuration.
        worker: This worker's index (it offsets the sampler's seed).

    Returns:
        What this worker did.

    Raises:
        Interrupted: If SIGINT or SIGTERM arrived; the running trial was left to be retried
            from its last checkpoint.

    """
    storage = _storage(cfg)
    seed = None if cfg.seed is None else cfg.seed + worker * _SEED_STRIDE
    study = optuna.load_study(
        study_name=cfg.study_name,
        storage=storage,
        sampler=make_sampler(cfg.sampler, seed=seed, spaces=trainer.spaces),
        pruner=make_pruner(cfg.pruner, epochs=cfg.epochs),
    )
    lock = budget_lock(cfg.storage, storage, cfg.study_name)
    report = WorkerReport(worker)
    with stop_on_signals() as flag:
        _work(trainer, cfg, study, storage, lock, report, flag)
    return report


def _work(
    trainer: Trainer,
    cfg: SearchConfig,
    study: optuna.Study,
    storage: Any,
    lock: Any,
    report: WorkerReport,
    flag: StopFlag,
) -> None:
    """Run the worker loop of :func:`run_worker` (see there)."""
    waiting_said = False
    deadline = None if cfg.timeout is None else time.monotonic() + cfg.timeout
    while deadline is None or time.monotonic() < deadline:
        if flag.signum is not None:
            raise Interrupted(flag.signum)
        with lock:
            if cfg.heartbeat_interval and isinstance(storage, optuna.storages.RDBStorage):
                optuna.storages.fail_stale_trials(study)
                fail_silent_trials(study, storage, 3 * cfg.grace_period)
            trials = study.get_trials(deepcopy=False)
            done = sum(1 for t in trials if t.state in _DONE)
            running = sum(1 for t in trials if t.state == TrialState.RUNNING)
            if done >= cfg.n_trials:
                break
            if _failures(trials) >= cfg.max_failures:
                logger.error(
                    "stopping: %d trials failed (max_failures=%d); see their 'failure' attribute",
                    _failures(trials),
                    cfg.max_failures,
                )
                break
            trial = _ask(study) if done + running < cfg.n_trials else None
            if trial is not None and cfg.heartbeat_interval:
                # Beat at once, still under the lock: a trial must never sit RUNNING
                # without a heartbeat, or nothing could tell that its worker died.
                beat(storage, trial._trial_id)
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
        state, epochs = run_trial(trainer, study, trial, cfg, worker=report.worker)
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


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():
        # We run the heartbeat ourselves (see Heartbeat), which Optuna cannot know.
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask()


def trial_dir(cfg: SearchConfig, number: int) -> Path:
    """Return the folder of trial ``number``: checkpoint and TensorBoard run."""
    return Path(cfg.runs_dir) / cfg.study_name / f"trial-{number}"


def _root_number(trial: optuna.Trial) -> int:
    """Return the number of the first attempt of this trial (itself unless a retry)."""
    return root_number(trial.study._storage.get_trial(trial._trial_id))


def _best(history: Mapping[str, list[float]], metric: str, direction: str) -> tuple[float, int]:
    values = history[metric]
    pick = min if direction == "minimize" else max
    best = pick(range(len(values)), key=lambda i: values[i])
    return values[best], best + 1


def run_trial(
    trainer: Trainer,
    study: optuna.Study,
    trial: optuna.Trial,
    cfg: SearchConfig,
    *,
    worker: int = 0,
) -> tuple[TrialState, int]:
    """Train one trial and tell the study how it ended.

    The trial's heartbeat runs from start to end, so a worker that dies at any point
    leaves a trial that is failed and retried after the grace period.

    Returns:
        The trial's final state and the epochs trained in this attempt.

    """
    with Heartbeat(study._storage, trial._trial_id, cfg.heartbeat_interval):
        return _run_trial(trainer, study, trial, cfg, worker=worker)


def _run_trial(
    trainer: Trainer,
    study: optuna.Study,
    trial: optuna.Trial,
    cfg: SearchConfig,
    *,
    worker: int,
) -> tuple[TrialState, int]:
    started = time.perf_counter()
    root = _root_number(trial)
    folder = trial_dir(cfg, root)
    ckpt_path = folder / "last.pt"
    attrs: dict[str, Any] = {
        "device": str(trainer.device),
    }
    if root != trial.number:
        attrs["retry_of"] = root
    state = TrialState.FAIL
    value = None
    run = None
    resumed = 0
    # So that status shows who runs it, where, and on which GPU.
    trial.set_user_attr("worker", worker)
    trial.set_user_attr("host", platform.node())
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        trial.set_user_attr("cuda_visible_devices", os.environ["CUDA_VISIBLE_DEVICES"])
    try:
        values = {t: space.suggest(trial) for t, space in trainer.spaces.items()}
        run, resumed = _prepare(trainer, values, cfg, root, ckpt_path, attrs)
        hparams = {f"{t}.{k}": v for t, vs in values.items() for k, v in vs.items()}
        board = TensorBoardCallback(folder, hparams=hparams)
        callbacks = [
            PruningCallback(FastReporter(study, trial), cfg.metric),
            # Every epoch, so a crash loses at most one; not fsynced (the checksum beside
            # it catches a torn write after a power cut, and the retry then starts over).
            CheckpointCallback(folder, every=1, filename="last.pt", durable=False),
            board,
        ]
        FLAG.state = run.state
        if FLAG.signum is not None:
            run.state.interrupted = True
        try:
            trainer.fit(run, callbacks)
        finally:
            FLAG.state = None
            board.on_fit_end(run.state)  # hparams and last scalars, also when pruned
        if run.state.interrupted:
            return _leave_for_retry(study, trial, attrs, run.state.epoch, resumed)
        value, best_epoch = _best(run.state.history, cfg.metric, cfg.direction)
        attrs["best_epoch"] = best_epoch
        state = TrialState.COMPLETE
    except optuna.TrialPruned as exc:
        attrs["pruned"] = str(exc) or "pruned"
        state = TrialState.PRUNED
    except NonFiniteLossError as exc:
        attrs["pruned"] = f"non-finite loss: {exc}"
        state = TrialState.PRUNED
    except torch.OutOfMemoryError as exc:
        attrs["failure"] = f"out of memory: {str(exc).splitlines()[0]}"
    except Exception as exc:
        attrs["failure"] = f"{type(exc).__name__}: {exc}"
        attrs["traceback"] = traceback.format_exc()[-8000:]
    epochs_done = run.state.epoch if run is not None else 0
    attrs["epochs"] = epochs_done
    attrs["wall_time"] = round(time.perf_counter() - started, 3)
    attrs["checkpoint"] = str(ckpt_path)
    for key, val in attrs.items():
        trial.set_user_attr(key, val)
    if state == TrialState.COMPLETE and value is not None and math.isfinite(value):
        study.tell(trial, value)
    else:
        study.tell(trial, state=state if state != TrialState.COMPLETE else TrialState.FAIL)
    logger.info(
        "trial %d %s after %d epochs%s",
        trial.number,
        state.name.lower(),
        epochs_done,
        f": {cfg.metric}={value:.5g}"
        if value is not None
        else f" ({attrs.get('pruned') or attrs.get('failure')})",
    )
    _cleanup_checkpoints(study, cfg)
    return state, epochs_done - resumed


def _leave_for_retry(
    study: optuna.Study, trial: optuna.Trial, attrs: dict[str, Any], epochs: int, resumed: int
) -> tuple[TrialState, int]:
    """Fail an interrupted trial without counting it, and queue it again with its params."""
    attrs["interrupted"] = f"stopped after epoch {epochs}; re-queued"
    attrs["epochs"] = epochs
    for key, val in attrs.items():
        trial.set_user_attr(key, val)
    study.tell(trial, state=TrialState.FAIL)
    Requeue()(study, study._storage.get_trial(trial._trial_id))
    logger.info("trial %d interrupted after epoch %d; re-queued", trial.number, epochs)
    return TrialState.FAIL, epochs - resumed


def _prepare(
    trainer: Trainer,
    values: dict[str, dict[str, Any]],
    cfg: SearchConfig,
    root: int,
    ckpt_path: Path,
    attrs: dict[str, Any],
) -> tuple[Any, int]:
    """Build the trial's run; resume it from the first attempt's checkpoint if there is one.

    Only a retry resumes, and only from a checkpoint written with the same parameters: a
    checkpoint left by an earlier study of the same name is removed, never used.
    """
    seed = (cfg.seed or 0) + root
    run = trainer.build(values, epochs=cfg.epochs, seed=seed, with_test=False)
    if not ckpt_path.exists():
        return run, 0
    if "retry_of" not in attrs:
        logger.warning("removing %s: left by an earlier study of the same name", ckpt_path)
        checkpoint.remove(ckpt_path)
        return run, 0
    try:
        ckpt = checkpoint.load(ckpt_path)
        if ckpt.get("params") != run.state.params:
            raise CheckpointError(
                f"{ckpt_path} was written with other parameters ({ckpt.get('params')})"
            )
        checkpoint.restore(run.state, ckpt)
    except CheckpointError as exc:
        logger.warning("trial %d starts over: %s", root, exc)
        return trainer.build(values, epochs=cfg.epochs, seed=seed, with_test=False), 0
    attrs["resumed_from_epoch"] = run.state.epoch
    logger.info("trial %d resumes from its checkpoint at epoch %d", root, run.state.epoch)
    return run, run.state.epoch


def _cleanup_checkpoints(study: optuna.Study, cfg: SearchConfig) -> None:
    """Remove checkpoints of finished trials, except the ``keep_checkpoints`` best ones."""
    trials = study.get_trials(deepcopy=False, states=(*_DONE, TrialState.FAIL))
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    complete.sort(key=lambda t: t.value, reverse=cfg.direction == "maximize")
    keep = {t.user_attrs.get("retry_of", t.number) for t in complete[: cfg.keep_checkpoints]}
    # Trials whose checkpoint this process already removed stay removed: check only the rest.
    removed = _REMOVED.setdefault((cfg.storage, cfg.study_name, cfg.runs_dir), set())
    for t in trials:
        number = t.user_attrs.get("retry_of", t.number)
        if number in removed or number in keep:
            continue
        if t.state == TrialState.FAIL and "failure" not in t.user_attrs:
            continue  # a dead worker's trial keeps its checkpoint for the retry
        checkpoint.remove(trial_dir(cfg, number) / "last.pt")
        removed.add(number)


def best_values(trainer: Trainer, study: optuna.Study) -> dict[str, dict[str, Any]]:
    """Return the best trial's values for each target, ready for :meth:`Trainer.train`.

    Raises:
        ConfigError: If the study has no completed trial.

    """
    try:
        best = study.best_trial
    except ValueError:
        raise ConfigError(
            f"study {study.study_name!r} has no completed trial yet; run the search first"
        ) from None
    return trainer.resolve_params(best.params)


__all__ = [
    "SearchConfig",
    "WorkerReport",
    "available_metrics",
    "best_values",
    "create_study",
    "make_config",
    "run_trial",
    "run_worker",
    "search",
    "trial_dir",
]
