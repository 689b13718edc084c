"""The one entry point of a search: options -> study -> workers -> outcome.

:func:`search` checks every option, creates or continues the study, runs the worker loop in
this process or in spawned worker processes (one per device slot where devices are given),
shows progress if asked, and says whether the budget was reached. ``Trainer.hyp_opt`` and
``hpo-trainer search`` both call it; nothing else orchestrates a search.

The rule for the outcome: a search is complete when its budget of finished trials is
reached, or when ``timeout`` ended it as asked. Otherwise it stopped short, and
:attr:`SearchOutcome.problem` says why in one paragraph: the trials that failed and where
their tracebacks are, or the worker processes that died.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from hpo_trainer.search import facts
from hpo_trainer.search.config import SearchConfig, make_config
from hpo_trainer.search.early import EarlyWorkers
from hpo_trainer.search.objectives import MODEL_MEASURES
from hpo_trainer.search.processes import run_workers
from hpo_trainer.search.progress import Monitor, Progress
from hpo_trainer.search.storage import StorageFile
from hpo_trainer.search.study import create_study, storage_of
from hpo_trainer.search.task import SearchTask
from hpo_trainer.search.warmstart import enqueue_known, warm_start_params
from hpo_trainer.search.worker import run_worker
from hpo_trainer.train import interrupt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOutcome:
    """How a search ended.

    Attributes:
        study: The study, loaded afresh after the workers stopped.
        config: The configuration the search ran with.
        finished: Finished (complete or pruned) trials in the study.
        stopped_by: ``budget``, ``timeout``, ``failures``, ``workers`` (processes died) or
            ``unknown``.
        dead_workers: ``(worker, exit code)`` of each worker process that did not exit 0.
        problem: Why the search stopped short of its budget, or ``None`` if it did not.

    """

    study: optuna.Study
    config: SearchConfig
    finished: int
    stopped_by: str
    dead_workers: tuple[tuple[int, int], ...] = ()
    problem: str | None = None

    @property
    def complete(self) -> bool:
        """Whether the search ended as asked: its budget reached, or its timeout passed."""
        return self.problem is None


def search(
    task: SearchTask,
    *,
    epochs: int,
    n_trials: int,
    progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[SearchConfig], None] | None = None,
    early: EarlyWorkers | None = None,
    **options: Any,
) -> SearchOutcome:
    """Run (or continue) a search until the study has ``n_trials`` finished trials.

    Args:
        task: What to train (a :class:`~hpo_trainer.Trainer`).
        epochs: Epochs per trial.
        n_trials: Finished trials the study should have in total, across all workers and
            all runs of this search (a re-run continues to this total).
        progress: Called with a :class:`~hpo_trainer.search.progress.Progress` whenever
            the study changes (read from the storage, so it sees every worker).
        on_start: Called with the checked configuration once the study exists, before
            the first trial.
        early: Worker processes started before the task was built (see
            :mod:`~hpo_trainer.search.early`); they run the search if they fit it.
        **options: See :func:`~hpo_trainer.search.config.make_config` (``n_workers``,
            ``devices``, ``storage``, ``study_name``, ``sampler``, ``pruner``,
            ``trial_timeout``, ``enqueue``, ``warm_start_from``, ...).

    Returns:
        The outcome; :attr:`SearchOutcome.complete` tells whether the budget was reached.

    Raises:
        ConfigError: If an option is invalid (nothing is written then).
        Interrupted: If SIGINT or SIGTERM stopped the search; running trials are retried
            from their checkpoints when it runs again.

    """
    cfg = make_config(task, epochs=epochs, n_trials=n_trials, **options)
    known = warm_start_params(task, cfg)  # checked before the study is touched
    study = create_study(cfg)
    enqueue_known(study, cfg, known)
    if cfg.goal.objectives and cfg.goal.prune_on is None:
        logger.warning(
            "Optuna cannot prune a study with %d objectives: every trial trains all %d "
            "epochs. To prune on one objective alone, give prune_on (--prune-on) one of %s",
            len(cfg.goal.objectives),
            cfg.budget.epochs,
            ", ".join(n for n, _ in cfg.goal.objectives if n not in MODEL_MEASURES),
        )
    file = StorageFile(cfg.identity.storage)
    if on_start is not None:
        on_start(cfg)
    started = time.monotonic()
    interrupt.clear()
    codes: list[int] = []
    monitor = (
        Monitor(study, cfg.budget.n_trials, progress) if progress else contextlib.nullcontext()
    )
    with monitor:
        if cfg.placement.in_process:
            if early is not None:
                early.cancel()
            run_worker(task, cfg)
        else:
            codes = run_workers(task, cfg, early)
    file.check()  # loading a lost file's study would create an empty one in its place
    study = optuna.load_study(study_name=cfg.identity.study_name, storage=storage_of(cfg))
    return _outcome(study, cfg, codes, time.monotonic() - started)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (often the kernel's out-of-memory killer)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


def _after_dead_workers(dead: tuple[tuple[int, int], ...]) -> str:
    """Say what to do after workers died: killed ones resume, failed ones need a fix first."""
    rerun = (
        "Run the same command again to continue the study; the trials those workers ran are "
        "retried from their last checkpoints"
    )
    if all(code < 0 for _, code in dead):
        return rerun
    return (
        "A worker that exits with an error failed on its own (its error is logged above, "
        "e.g. the study file's make_trainer raising): fix the cause, then r" + rerun[1:]
    )


def _outcome(
    study: optuna.Study, cfg: SearchConfig, codes: list[int], elapsed: float
) -> SearchOutcome:
    """Apply the outcome rule of the module docs to a finished run of the workers."""
    trials = study.get_trials(deepcopy=False)
    done = facts.finished(trials)
    dead = tuple((i, c) for i, c in enumerate(codes) if c != 0)
    died = "; ".join(f"worker {i} {_describe_exit(c)}" for i, c in dead)
    result = {"study": study, "config": cfg, "finished": done, "dead_workers": dead}
    if done >= cfg.budget.n_trials:
        if dead:
            logger.warning("%s; the other workers finished the budget", died)
        return SearchOutcome(stopped_by="budget", **result)
    short = (
        f"the search stopped short of its budget ({done}/{cfg.budget.n_trials} trials finished)"
    )
    failed = facts.failures(trials)
    if len(failed) >= cfg.budget.max_failures:
        last = failed[-1]
        return SearchOutcome(
            stopped_by="failures",
            problem=(
                f"{short}: {len(failed)} trials failed (max_failures={cfg.budget.max_failures}). "
                f"The last, trial {last.number}: {last.user_attrs['failure']}. Each failed "
                "trial's traceback is in its 'traceback' attribute (`hpo-trainer status "
                f"--study-name {cfg.identity.study_name} --json`, or the dashboard); fix the "
                "cause and run the search again to continue the study"
            ),
            **result,
        )
    if dead:
        return SearchOutcome(
            stopped_by="workers",
            problem=f"{short}: {died}. {_after_dead_workers(dead)}",
            **result,
        )
    if cfg.budget.timeout is not None and elapsed >= cfg.budget.timeout:
        return SearchOutcome(stopped_by="timeout", **result)
    return SearchOutcome(
        stopped_by="unknown",
        problem=f"{short}; run it again to continue the study",
        **result,
    )
