"""One trial: suggest its parameters, build a fresh run, train it with pruning, tell the study.

The trial's heartbeat runs from start to end, so a worker that dies at any point leaves a
trial that is failed and retried (from its last per-epoch checkpoint) after the grace
period. The value of a completed trial is the **best** epoch's value of the monitored
metric, with that epoch recorded as ``best_epoch``.

How a trial ended is decided once, by :func:`decide` (what happened: an :class:`Ending`;
what the study is told and records: an :class:`Outcome`), and written once, by
:func:`_write` (user attributes, ``study.tell``, the re-queue of an interrupted trial or the
clean-up of checkpoints). :mod:`hpo_trainer.search.facts` reads every count from what it
wrote.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from hpo_trainer.base.errors import CheckpointError, NonFiniteError
from hpo_trainer.search import artifacts, facts, optuna_api
from hpo_trainer.search.config import SearchConfig
from hpo_trainer.search.heartbeat import Heartbeat, Requeue, root_number
from hpo_trainer.search.objectives import chosen_by, trial_values
from hpo_trainer.search.pruning import FastReporter, PruningCallback
from hpo_trainer.search.task import SearchTask
from hpo_trainer.train import checkpoint
from hpo_trainer.train.best import KeepBest
from hpo_trainer.train.callbacks import CheckpointCallback, TensorBoardCallback, TimeLimit
from hpo_trainer.train.interrupt import FLAG
from hpo_trainer.train.state import Run

logger = logging.getLogger(__name__)

#: Trial numbers whose checkpoints this process removed, by (storage, study, runs dir).
_REMOVED: dict[tuple[str, str, str], set[int]] = {}


def trial_dir(cfg: SearchConfig, number: int) -> Path:
    """Return the folder of trial ``number``: checkpoint and TensorBoard run."""
    return Path(cfg.durability.runs_dir) / cfg.identity.study_name / f"trial-{number}"


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
    with Heartbeat(
        optuna_api.storage_of(study), optuna_api.trial_id(trial), cfg.durability.heartbeat_interval
    ):
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
        Why the trial's time limit (``cfg.budget.trial_timeout``) stopped it, or ``None``.

    """
    board = TensorBoardCallback(folder, hparams=hparams)
    # Every epoch, written by a background thread while the next epoch trains (at most one
    # write in flight, so a killed worker resumes from the last or the one before); not
    # fsynced (the checksum beside it catches a torn write after a power cut, and the
    # retry then starts over).
    saver = CheckpointCallback(folder, every=1, filename="last.pt", durable=False, background=True)
    limit = None
    if cfg.budget.trial_timeout is not None:  # counted from the trial's start, building included
        limit = TimeLimit(cfg.budget.trial_timeout, started=started)
    metric, way = chosen_by(cfg)
    callbacks = [
        *([limit] if limit is not None else []),
        # The best epoch's weights ride in the checkpoint: `train --from-trial` ships them.
        KeepBest(metric, mode=way),
        PruningCallback(
            FastReporter(
                study, trial, direction=cfg.goal.direction if cfg.goal.objectives else None
            ),
            cfg.goal.metric,
        ),
        saver,
        board,
    ]
    FLAG.state = run.state
    if FLAG.signum is not None:
        run.state.interrupted = True
    # fit closes every callback on every path: the checkpoint writer is flushed (no write
    # lands after the trial's clean-up) and TensorBoard gets its hparams, also when pruned.
    try:
        task.fit(run, callbacks)
    finally:
        FLAG.state = None
    return limit.reason if limit is not None else None


@dataclass(frozen=True)
class Ending:
    """What happened to one attempt of a trial, from which its outcome is decided.

    Attributes:
        epochs: The epochs its run had completed when it ended (resumed ones included).
        seconds: Its wall time, building included.
        error: What its code raised, if anything (pruning raises ``optuna.TrialPruned``).
        interrupted: Whether a signal stopped it (at a batch boundary).
        timed_out: Why its time limit stopped it, if it did.
        value: Its value (one per objective in a multi-objective search), if it trained
            to the end.
        best_epoch: The epoch its value was read at (0: no finite epoch).

    """

    epochs: int
    seconds: float
    error: Exception | None = None
    interrupted: bool = False
    timed_out: str | None = None
    value: float | list[float] | None = None
    best_epoch: int = 0


@dataclass(frozen=True)
class Outcome:
    """How a trial ended, decided once (:func:`decide`) and written once (:func:`_write`).

    Attributes:
        state: What the study is told: ``COMPLETE``, ``PRUNED`` or ``FAIL``.
        value: The value told with ``COMPLETE`` (``None`` otherwise).
        attrs: The user attributes that record it: ``pruned``, ``failure`` (what
            :func:`hpo_trainer.search.facts.failures` counts), ``traceback`` or
            ``interrupted`` with the reason; ``best_epoch``; ``epochs``; and ``wall_time``
            except for an interrupted attempt.
        requeue: Whether the trial is queued again with its parameters (it was stopped by a
            signal; its retry resumes from its checkpoint).

    """

    state: TrialState
    value: float | list[float] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    requeue: bool = False

    @property
    def reason(self) -> str | None:
        """Why the trial did not complete, or ``None`` if it did."""
        for key in ("interrupted", "pruned", "failure"):
            if key in self.attrs:
                return str(self.attrs[key])
        return None


def decide(cfg: SearchConfig, ending: Ending) -> Outcome:
    """Return a trial's outcome: the one place that maps what happened to what is told.

    * an exception: ``optuna.TrialPruned`` prunes with its reason; a non-finite loss or
      monitored metric (:class:`~hpo_trainer.base.errors.NonFiniteError`) prunes with
      ``non-finite <metric>: ...``; anything else fails with its message (out of memory:
      its first line; others: with the traceback);
    * a signal: failed without a ``failure`` (so not counted) and queued again;
    * the time limit: pruned with its reason (its reported epochs stay);
    * a non-finite value at the end: failed with ``non-finite value: ...``, counted as a
      failure and its checkpoint cleaned up like any failed trial's;
    * else: complete with its value and best epoch.
    """
    attrs: dict[str, Any] = {"epochs": ending.epochs}
    if ending.interrupted and ending.error is None:
        attrs["interrupted"] = f"stopped after epoch {ending.epochs}; re-queued"
        return Outcome(TrialState.FAIL, attrs=attrs, requeue=True)
    attrs["wall_time"] = round(ending.seconds, 3)
    error = ending.error
    if isinstance(error, optuna.TrialPruned):
        return Outcome(TrialState.PRUNED, attrs={**attrs, "pruned": str(error) or "pruned"})
    if isinstance(error, NonFiniteError):
        reason = f"non-finite {error.metric}: {error}"
        return Outcome(TrialState.PRUNED, attrs={**attrs, "pruned": reason})
    if isinstance(error, torch.OutOfMemoryError):
        attrs["failure"] = f"out of memory: {str(error).splitlines()[0]}"
        return Outcome(TrialState.FAIL, attrs=attrs)
    if error is not None:
        attrs["failure"] = f"{type(error).__name__}: {error}"
        attrs["traceback"] = "".join(traceback.format_exception(error))[-8000:]
        return Outcome(TrialState.FAIL, attrs=attrs)
    if ending.timed_out:  # pruned: its reported epochs stay, the last one is its value
        return Outcome(TrialState.PRUNED, attrs={**attrs, "pruned": ending.timed_out})
    attrs["best_epoch"] = ending.best_epoch
    bad = _non_finite(cfg, ending.value)
    if bad:
        if ending.best_epoch:
            attrs["failure"] = f"non-finite value: {bad} at its best epoch {ending.best_epoch}"
        else:
            attrs["failure"] = (
                f"non-finite value: {bad} (no epoch of {chosen_by(cfg)[0]} is finite)"
            )
        return Outcome(TrialState.FAIL, attrs=attrs)
    return Outcome(TrialState.COMPLETE, ending.value, attrs)


def _non_finite(cfg: SearchConfig, value: float | list[float] | None) -> str:
    """Name the non-finite values of a trial (``val/acc=nan``), or return ``""``."""
    if value is None:
        return "no value"
    names = [n for n, _ in cfg.goal.objectives] if isinstance(value, list) else [cfg.goal.metric]
    values = value if isinstance(value, list) else [value]
    return ", ".join(f"{n}={v}" for n, v in zip(names, values) if not math.isfinite(v))


def _run_trial(
    task: SearchTask,
    study: optuna.Study,
    trial: optuna.Trial,
    cfg: SearchConfig,
    *,
    worker: int,
) -> tuple[TrialState, int]:
    started = time.perf_counter()
    root = root_number(optuna_api.stored_trial(study, trial))
    folder = trial_dir(cfg, root)
    # What this trial was asked: a study may be continued with other epochs or an edited
    # study file, and export reports the best trial's own (never another metric: refused).
    # The seed and threads too: the final run repeats them to repeat the trial's value.
    attrs: dict[str, Any] = {
        "device": str(task.device),
        "max_epochs": cfg.budget.epochs,
        "seed": (cfg.strategy.seed or 0) + root,
        "threads": torch.get_num_threads(),
    }
    if "study_file_sha256" in cfg.identity.provenance:
        attrs["study_file_sha256"] = cfg.identity.provenance["study_file_sha256"]
    if root != trial.number:
        attrs["retry_of"] = root
    attrs["checkpoint"] = str(folder / "last.pt")
    run, resumed, error, timed_out, value, best = None, 0, None, None, None, 0
    _record_where(trial, worker)
    try:
        values = {t: space.suggest(trial) for t, space in task.spaces.items()}
        run, resumed = _prepare(task, values, cfg, root, folder / "last.pt", attrs)
        hparams = {f"{t}.{k}": v for t, vs in values.items() for k, v in vs.items()}
        timed_out = _train(task, study, trial, cfg, run, folder, hparams, started)
        if not (run.state.interrupted or timed_out):
            value, best = trial_values(task, run, cfg)
    except Exception as exc:
        error = exc
    epochs = run.state.epoch if run is not None else 0
    ending = Ending(
        epochs=epochs,
        seconds=time.perf_counter() - started,
        error=error,
        interrupted=run is not None and run.state.interrupted,
        timed_out=timed_out,
        value=value,
        best_epoch=best,
    )
    outcome = decide(cfg, ending)
    # The error's traceback holds this frame: drop it, or the cycle keeps the run (and its
    # device memory) alive until the next garbage collection, into the next trial.
    del error, ending
    _write(study, trial, cfg, outcome, attrs)
    return outcome.state, epochs - resumed


def _write(
    study: optuna.Study,
    trial: optuna.Trial,
    cfg: SearchConfig,
    outcome: Outcome,
    attrs: Mapping[str, Any],
) -> None:
    """Write a trial's outcome: its user attributes, the study's tell, a requeue or the
    clean-up of checkpoints. The one place a trial ends.

    Args:
        study: The study.
        trial: The running trial.
        cfg: The search's configuration.
        outcome: How it ended (:func:`decide`).
        attrs: What it was asked and where its checkpoint is.

    """
    for key, val in {**attrs, **outcome.attrs}.items():
        trial.set_user_attr(key, val)
    if outcome.state == TrialState.COMPLETE:
        study.tell(trial, outcome.value)
    else:
        study.tell(trial, state=outcome.state)
    epochs = outcome.attrs["epochs"]
    if outcome.requeue:
        Requeue()(study, optuna_api.stored_trial(study, trial))
        logger.info("trial %d interrupted after epoch %d; re-queued", trial.number, epochs)
        return
    logger.info(
        "trial %d %s after %d epochs%s",
        trial.number,
        outcome.state.name.lower(),
        epochs,
        _describe(cfg, outcome.value) if outcome.value is not None else f" ({outcome.reason})",
    )
    completed = optuna_api.trial_id(trial) if outcome.state == TrialState.COMPLETE else None
    cleanup_checkpoints(study, cfg, completed=completed)


def _describe(cfg: SearchConfig, value: float | list[float]) -> str:
    if isinstance(value, list):
        return ": " + ", ".join(f"{n}={v:.5g}" for (n, _), v in zip(cfg.goal.objectives, value))
    return f": {cfg.goal.metric}={value:.5g}"


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
    run = task.build(values, epochs=cfg.budget.epochs, seed=seed, with_test=False)
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
        return task.build(values, epochs=cfg.budget.epochs, seed=seed, with_test=False), 0
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
    kept = {facts.first_attempt(t) for t in facts.ranked(study, trials)[:keep]}
    remove = set()
    for t in trials:
        if t.state == TrialState.FAIL and not facts.failed_by_itself(t):
            continue  # a dead or stopped worker's trial keeps its checkpoint for the retry
        number = facts.first_attempt(t)
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
    remove = checkpoints_to_remove(study, trials, cfg.durability.keep_checkpoints)
    store = artifacts.store_dir(cfg.identity.storage, cfg.durability.runs_dir)
    mine = next((t for t in trials if optuna_api.trial_id(t) == completed), None)
    if mine is not None and mine.state == TrialState.COMPLETE:
        number = facts.first_attempt(mine)
        if number not in remove:
            artifacts.attach_checkpoint(
                study, optuna_api.trial_id(mine), number, trial_dir(cfg, number) / "last.pt", store
            )
            # Read again: a trial told meanwhile may have pushed this one out. Either this
            # read sees it, or that trial's worker sees this artifact in its own clean-up.
            trials = study.get_trials(deepcopy=False, states=states)
            remove = checkpoints_to_remove(study, trials, cfg.durability.keep_checkpoints)
    artifacts.detach_checkpoints(study, trials, remove, store)
    # Trials whose checkpoint this process already removed stay removed: check only the rest.
    removed = _REMOVED.setdefault(
        (cfg.identity.storage, cfg.identity.study_name, cfg.durability.runs_dir), set()
    )
    for number in remove - removed:
        checkpoint.remove(trial_dir(cfg, number) / "last.pt")
        removed.add(number)
