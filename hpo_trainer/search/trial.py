"""One trial: suggest its parameters, build a fresh run, train it with pruning, tell the study.

The trial's heartbeat runs from start to end, so a worker that dies at any point leaves a
trial that is failed and retried (from its last per-epoch checkpoint) after the grace
period. The value of a completed trial is the **best** epoch's value of the monitored
metric, with that epoch recorded as ``best_epoch``.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from hpo_trainer.errors import CheckpointError, NonFiniteLossError
from hpo_trainer.search import artifacts, facts
from hpo_trainer.search.config import SearchConfig
from hpo_trainer.search.heartbeat import Heartbeat, Requeue, root_number
from hpo_trainer.search.objectives import chosen_by, trial_values
from hpo_trainer.search.pruning import FastReporter, PruningCallback
from hpo_trainer.search.task import SearchTask
from hpo_trainer.train import checkpoint
from hpo_trainer.train.best import KeepBest, best_epoch
from hpo_trainer.train.callbacks import CheckpointCallback, TensorBoardCallback, TimeLimit
from hpo_trainer.train.interrupt import FLAG
from hpo_trainer.train.state import Run

logger = logging.getLogger(__name__)

#: Trial numbers whose checkpoints this process removed, by (storage, study, runs dir).
_REMOVED: dict[tuple[str, str, str], set[int]] = {}


def trial_dir(cfg: SearchConfig, number: int) -> Path:
    """Return the folder of trial ``number``: checkpoint and TensorBoard run."""
    return Path(cfg.runs_dir) / cfg.study_name / f"trial-{number}"


def run_trial(
    task: SearchTask,
    study: optuna.Study,
    trial: optuna.Trial,
    cfg: SearchConfig,
    *,
    worker: int = 0,
) -> tuple[TrialState, int]:
    """Train one trial and tell the study how it ended.

    Returns:
        The trial's final state and the epochs trained in this attempt.

    """
    with Heartbeat(study._storage, trial._trial_id, cfg.heartbeat_interval):
        return _run_trial(task, study, trial, cfg, worker=worker)


def _record_where(trial: optuna.Trial, worker: int) -> None:
    # So that status shows who runs it, where, and on which GPU.
    trial.set_user_attr("worker", worker)
    trial.set_user_attr("host", platform.node())
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        trial.set_user_attr("cuda_visible_devices", os.environ["CUDA_VISIBLE_DEVICES"])


def _train(
    task: SearchTask,
    study: optuna.Study,
    trial: optuna.Trial,
    cfg: SearchConfig,
    run: Run,
    folder: Path,
    hparams: Mapping[str, Any],
    started: float,
) -> str | None:
    """Fit ``run`` with the trial's callbacks: pruning, per-epoch checkpoint, TensorBoard.

    Returns:
        Why the trial's time limit (``cfg.trial_timeout``) stopped it, or ``None``.

    """
    board = TensorBoardCallback(folder, hparams=hparams)
    # Every epoch, written by a background thread while the next epoch trains (at most one
    # write in flight, so a killed worker resumes from the last or the one before); not
    # fsynced (the checksum beside it catches a torn write after a power cut, and the
    # retry then starts over).
    saver = CheckpointCallback(folder, every=1, filename="last.pt", durable=False, background=True)
    limit = None
    if cfg.trial_timeout is not None:  # counted from the trial's start, building included
        limit = TimeLimit(cfg.trial_timeout, started=started)
    callbacks = [
        *([limit] if limit is not None else []),
        # The best epoch's weights ride in the checkpoint: `train --from-trial` ships them.
        KeepBest(chosen_by(cfg)[0], mode=chosen_by(cfg)[1]),
        PruningCallback(
            FastReporter(study, trial, direction=cfg.direction if cfg.objectives else None),
            cfg.metric,
        ),
        saver,
        board,
    ]
    FLAG.state = run.state
    if FLAG.signum is not None:
        run.state.interrupted = True
    try:
        task.fit(run, callbacks)
    finally:
        FLAG.state = None
        saver.flush()  # also when pruned: no write may land after the trial's clean-up
        board.on_fit_end(run.state)  # hparams and last scalars, also when pruned
    return limit.reason if limit is not None else None


def _run_trial(
    task: SearchTask,
    study: optuna.Study,
    trial: optuna.Trial,
    cfg: SearchConfig,
    *,
    worker: int,
) -> tuple[TrialState, int]:
    started = time.perf_counter()
    root = root_number(study._storage.get_trial(trial._trial_id))
    folder = trial_dir(cfg, root)
    # What this trial was asked: a study may be continued with other epochs or an edited
    # study file, and export reports the best trial's own (never another metric: refused).
    # The seed and threads too: the final run repeats them to repeat the trial's value.
    attrs: dict[str, Any] = {
        "device": str(task.device),
        "max_epochs": cfg.epochs,
        "seed": (cfg.seed or 0) + root,
        "threads": torch.get_num_threads(),
    }
    if "study_file_sha256" in cfg.provenance:
        attrs["study_file_sha256"] = cfg.provenance["study_file_sha256"]
    if root != trial.number:
        attrs["retry_of"] = root
    state, value, run, resumed = TrialState.FAIL, None, None, 0
    _record_where(trial, worker)
    try:
        values = {t: space.suggest(trial) for t, space in task.spaces.items()}
        run, resumed = _prepare(task, values, cfg, root, folder / "last.pt", attrs)
        hparams = {f"{t}.{k}": v for t, vs in values.items() for k, v in vs.items()}
        timed_out = _train(task, study, trial, cfg, run, folder, hparams, started)
        if run.state.interrupted:
            return _leave_for_retry(study, trial, attrs, run.state.epoch, resumed)
        if timed_out:  # pruned: its reported epochs stay, the last one is its value
            raise optuna.TrialPruned(timed_out)
        if cfg.objectives:  # several values: the metrics at the best epoch, model measures
            value, attrs["best_epoch"] = trial_values(task, run, cfg.objectives)
        else:
            value, attrs["best_epoch"] = _best(run.state.history, cfg.metric, cfg.direction)
        state = TrialState.COMPLETE
    except optuna.TrialPruned as exc:
        attrs["pruned"], state = str(exc) or "pruned", TrialState.PRUNED
    except NonFiniteLossError as exc:
        attrs["pruned"], state = f"non-finite loss: {exc}", TrialState.PRUNED
    except torch.OutOfMemoryError as exc:
        attrs["failure"] = f"out of memory: {str(exc).splitlines()[0]}"
    except Exception as exc:
        attrs["failure"] = f"{type(exc).__name__}: {exc}"
        attrs["traceback"] = traceback.format_exc()[-8000:]
    epochs_done = run.state.epoch if run is not None else 0
    attrs.update(
        epochs=epochs_done,
        wall_time=round(time.perf_counter() - started, 3),
        checkpoint=str(folder / "last.pt"),
    )
    for key, val in attrs.items():
        trial.set_user_attr(key, val)
    if state == TrialState.COMPLETE and value is not None and _finite(value):
        study.tell(trial, value)
    else:
        study.tell(trial, state=state if state != TrialState.COMPLETE else TrialState.FAIL)
    logger.info(
        "trial %d %s after %d epochs%s",
        trial.number,
        state.name.lower(),
        epochs_done,
        _describe(cfg, value)
        if value is not None
        else f" ({attrs.get('pruned') or attrs.get('failure')})",
    )
    cleanup_checkpoints(study, cfg, completed=trial._trial_id if value is not None else None)
    return state, epochs_done - resumed


def _finite(value: float | list[float]) -> bool:
    return all(math.isfinite(v) for v in (value if isinstance(value, list) else [value]))


def _describe(cfg: SearchConfig, value: float | list[float]) -> str:
    if isinstance(value, list):
        return ": " + ", ".join(f"{n}={v:.5g}" for (n, _), v in zip(cfg.objectives, value))
    return f": {cfg.metric}={value:.5g}"


def _best(history: Mapping[str, list[float]], metric: str, direction: str) -> tuple[float, int]:
    """Return the best epoch's value of ``metric`` and that epoch (1-based; 0: none finite)."""
    epoch = best_epoch(history[metric], direction)
    return (history[metric][epoch - 1], epoch) if epoch else (math.nan, 0)


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
    task: SearchTask,
    values: dict[str, dict[str, Any]],
    cfg: SearchConfig,
    root: int,
    ckpt_path: Path,
    attrs: dict[str, Any],
) -> tuple[Run, int]:
    """Build the trial's run; resume it from the first attempt's checkpoint if there is one.

    Only a retry resumes, and only from a checkpoint written with the same parameters: a
    checkpoint left by an earlier study of the same name is removed, never used.
    """
    seed = attrs["seed"]
    run = task.build(values, epochs=cfg.epochs, seed=seed, with_test=False)
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
        return task.build(values, epochs=cfg.epochs, seed=seed, with_test=False), 0
    attrs["resumed_from_epoch"] = run.state.epoch
    logger.info("trial %d resumes from its checkpoint at epoch %d", root, run.state.epoch)
    return run, run.state.epoch


def checkpoints_to_remove(
    study: optuna.Study, trials: list[optuna.trial.FrozenTrial], keep: int
) -> set[int]:
    """Return the trial folders (by first-attempt number) whose checkpoint may go.

    Kept: the ``keep`` best completed trials, and trials whose worker died or was stopped
    (their retry resumes from the checkpoint). Running and waiting trials are not in
    ``trials`` and so are never touched.
    """
    kept = {t.user_attrs.get("retry_of", t.number) for t in facts.ranked(study, trials)[:keep]}
    remove = set()
    for t in trials:
        if t.state == TrialState.FAIL and "failure" not in t.user_attrs:
            continue  # a dead worker's trial keeps its checkpoint for the retry
        number = t.user_attrs.get("retry_of", t.number)
        if number not in kept:
            remove.add(number)
    return remove


def cleanup_checkpoints(
    study: optuna.Study, cfg: SearchConfig, *, completed: int | None = None
) -> None:
    """Remove checkpoints of finished trials, except the ``keep_checkpoints`` best ones, and
    their artifacts (:mod:`hpo_trainer.search.artifacts`).

    Args:
        study: The study.
        cfg: The search's configuration.
        completed: The id of a trial this worker just completed: if it is one of the best,
            its checkpoint is first attached to the study as an artifact.

    """
    states = (*facts.FINISHED, TrialState.FAIL)
    trials = study.get_trials(deepcopy=False, states=states)
    remove = checkpoints_to_remove(study, trials, cfg.keep_checkpoints)
    store = artifacts.store_dir(cfg.storage, cfg.runs_dir)
    mine = next((t for t in trials if t._trial_id == completed), None)
    if mine is not None and mine.state == TrialState.COMPLETE:
        number = mine.user_attrs.get("retry_of", mine.number)
        if number not in remove:
            artifacts.attach_checkpoint(
                study, mine._trial_id, number, trial_dir(cfg, number) / "last.pt", store
            )
            # Read again: a trial told meanwhile may have pushed this one out. Either this
            # read sees it, or that trial's worker sees this artifact in its own clean-up.
            trials = study.get_trials(deepcopy=False, states=states)
            remove = checkpoints_to_remove(study, trials, cfg.keep_checkpoints)
    artifacts.detach_checkpoints(study, trials, remove, store)
    # Trials whose checkpoint this process already removed stay removed: check only the rest.
    removed = _REMOVED.setdefault((cfg.storage, cfg.study_name, cfg.runs_dir), set())
    for number in remove - removed:
        checkpoint.remove(trial_dir(cfg, number) / "last.pt")
        removed.add(number)
