"""The search configuration: every option checked together, frozen, sent to each worker."""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo_trainer.base.errors import (
    ConfigError,
    HpoTrainerError,
    StorageError,
    did_you_mean,
    is_int,
    raise_all,
)
from hpo_trainer.search import heartbeat
from hpo_trainer.search.locks import budget_lock_problem
from hpo_trainer.search.objectives import Objective, check_objectives, default_direction, reported
from hpo_trainer.search.storage import default_url, parse_url
from hpo_trainer.search.strategies import (
    DEFAULT_PRUNER,
    DEFAULT_SAMPLER,
    check_pruner,
    check_sampler,
)
from hpo_trainer.search.task import SearchTask
from hpo_trainer.train.devices import device_slots, parse_devices


@dataclass(frozen=True)
class SearchConfig:
    """Everything a worker needs besides the task (picklable, sent to worker processes).

    Attributes:
        study_name: The study's name.
        storage: The storage URL.
        epochs: Epochs per trial.
        n_trials: Finished (complete or pruned) trials the study should reach in total.
        metric: The metric reported and optimised (in a multi-objective search: the one
            reported per epoch, ``prune_on``'s or else the first history objective's).
        direction: ``minimize`` or ``maximize`` (of ``metric``).
        objectives: ``(metric, direction)`` of each objective of a multi-objective search;
            empty for a search on one metric.
        prune_on: The objective a multi-objective search prunes on, or ``None`` for none.
        sampler: A sampler name or object.
        pruner: A pruner name or object.
        seed: The base seed (worker ``i`` samples with ``seed + i * stride``).
        timeout: Seconds after which a worker starts no new trial.
        trial_timeout: Seconds a trial may train; past them it stops at the next batch
            boundary and is pruned.
        max_failures: Failed trials (exceptions in user code) after which workers stop.
        keep_checkpoints: Checkpoints of this many best trials are kept; others are removed.
        runs_dir: Where trial folders go: ``runs_dir/<study>/trial-<n>/``.
        heartbeat_interval: Seconds between heartbeats of a running trial.
        grace_period: Seconds without a heartbeat before a trial counts as dead.
        n_workers: Local workers: 1 runs in this process, more are spawned processes.
        slots: The GPU each worker process sees (``CUDA_VISIBLE_DEVICES``), or ``None`` to
            spread them over the visible GPUs.
        provenance: Recorded on the study as ``hpo:<key>`` (the study file and its hash).
        enqueue: Known configurations to run first: params file paths or
            ``{target: {name: value}}`` dicts.
        warm_start_from: An earlier study whose best completed trials are run first.
        warm_start_storage: The storage URL of ``warm_start_from`` (default: ``storage``).
        warm_start_top: How many of its best completed trials to run first.

    """

    study_name: str
    storage: str
    epochs: int
    n_trials: int
    metric: str = "val/loss"
    direction: str = "minimize"
    objectives: tuple[Objective, ...] = ()
    prune_on: str | None = None
    sampler: Any = DEFAULT_SAMPLER
    pruner: Any = DEFAULT_PRUNER
    seed: int | None = None
    timeout: float | None = None
    trial_timeout: float | None = None
    max_failures: int = 10
    keep_checkpoints: int = 3
    runs_dir: str = "runs"
    heartbeat_interval: int = heartbeat.INTERVAL
    grace_period: int = heartbeat.INTERVAL * heartbeat.GRACE_BEATS
    n_workers: int = 1
    slots: tuple[str, ...] | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    enqueue: tuple[Any, ...] = ()
    warm_start_from: str | None = None
    warm_start_storage: str | None = None
    warm_start_top: int = 5

    @property
    def in_process(self) -> bool:
        """Whether the one worker runs in this process (no spawned processes)."""
        return self.n_workers == 1 and self.slots is None


def _number_problems(
    *,
    epochs: Any,
    n_trials: Any,
    n_workers: Any,
    workers_per_device: Any,
    timeout: Any,
    trial_timeout: Any,
    seed: Any,
    max_failures: Any,
    keep_checkpoints: Any,
    heartbeat_interval: Any,
    grace_period: Any,
) -> list[str]:
    """Say which numeric options are out of range (empty if none)."""
    problems = [
        f"{arg} must be an integer >= 1, got {value!r}"
        for arg, value, optional in (
            ("epochs", epochs, False),
            ("iters (n_trials)", n_trials, True),  # required: see make_config
            ("n_workers", n_workers, True),
            ("workers_per_device", workers_per_device, False),
        )
        if not (optional and value is None) and not is_int(value, 1)
    ]
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
    ):
        problems.append(f"timeout must be a positive number of seconds, got {timeout!r}")
    if trial_timeout is not None and (
        isinstance(trial_timeout, bool)
        or not isinstance(trial_timeout, (int, float))
        or not 0 < trial_timeout < math.inf
    ):
        problems.append(
            f"trial_timeout must be a positive, finite number of seconds a trial may train "
            f"(e.g. 600), or None for no limit; got {trial_timeout!r}"
        )
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
    return problems


#: Other names of search options, as the command line spells them (``--trials``,
#: ``--workers``), by the name :func:`make_config` knows them under.
ALIASES: Mapping[str, str] = {"trials": "n_trials", "workers": "n_workers"}


def canonical_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Return search ``options`` (a study file's ``SEARCH``) with aliases renamed.

    ``{"trials": 40, "workers": 2}`` becomes ``{"n_trials": 40, "n_workers": 2}``; other
    keys are kept as they are.

    Raises:
        ConfigError: If an alias and its canonical name are both given, with different values.

    """
    renamed, problems = _renamed(options)
    raise_all(problems)
    return renamed


def _renamed(options: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Rename the aliases of ``options`` (:data:`ALIASES`); ``None`` counts as not given.

    Returns:
        The options under their canonical names, and a problem for each alias given with
        another value than its canonical name.

    """
    renamed = {k: v for k, v in options.items() if k not in ALIASES}
    problems = []
    for alias, name in ALIASES.items():
        if alias not in options:
            continue
        value, canonical = options[alias], renamed.get(name)
        if canonical is None:
            renamed[name] = value
        elif value is not None and value != canonical:
            problems.append(
                f"{alias} is another name of {name}, but they were given different values "
                f"({name}={canonical!r}, {alias}={value!r}); give only one of them"
            )
    return renamed, problems


def _unknown_problems(unknown: Mapping[str, Any]) -> list[str]:
    """Name each option :func:`make_config` does not know, with a "did you mean"."""
    known = [n for n in inspect.signature(make_config).parameters if n not in ("task", "unknown")]
    other = {name: alias for alias, name in ALIASES.items()}
    listed = ", ".join(f"{n} (or {other[n]})" if n in other else n for n in known)
    return [
        f"unknown search option {name!r}.{did_you_mean(name, [*known, *ALIASES])} "
        f"Options: {listed}"
        for name in unknown
    ]


def _choice_problems(
    task: SearchTask, sampler: Any, pruner: Any, metric: Any, direction: Any, storage: Any
) -> list[str]:
    """Say which named choices are unknown: sampler, pruner, metric, direction, storage."""
    problems = []
    checks = (
        lambda: check_sampler(sampler),
        lambda: check_pruner(pruner),
        lambda: _check_storage(storage),
    )
    for check in checks:
        try:
            check()
        except HpoTrainerError as exc:
            problems.append(str(exc))
    metrics = task.metric_names()
    if metric not in metrics:
        problems.append(
            f"metric {metric!r} is not produced by the training loop; choose one of "
            f"{', '.join(metrics)}"
        )
    if direction not in ("minimize", "maximize"):
        problems.append(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    return problems


def _check_storage(url: Any) -> None:
    """Check that ``url`` names a storage that can keep the budget exact.

    Raises:
        StorageError: If the URL is invalid, or the storage has no budget lock.

    """
    if (problem := budget_lock_problem(url)) is not None:
        raise StorageError(problem)


def _warm_start_problems(
    enqueue: Any, warm_start_from: Any, warm_start_storage: Any, warm_start_top: Any
) -> list[str]:
    """Say which warm-start options are malformed (their contents are checked later)."""
    problems = []
    items = [enqueue] if isinstance(enqueue, (str, os.PathLike, Mapping)) else enqueue
    if not isinstance(items, (list, tuple)):
        problems.append(
            f"enqueue must be a list of params files or {{target: {{name: value}}}} dicts, "
            f"got {enqueue!r}"
        )
    else:
        problems.extend(
            f"enqueue[{i}] must be a params file path or a {{target: {{name: value}}}} "
            f"dict, got {item!r}"
            for i, item in enumerate(items)
            if not isinstance(item, (str, os.PathLike, Mapping))
        )
    if warm_start_from is not None and (
        not isinstance(warm_start_from, str) or not warm_start_from.strip()
    ):
        problems.append(f"warm_start_from must name an earlier study, got {warm_start_from!r}")
    if warm_start_storage is not None:
        if warm_start_from is None:
            problems.append(
                "warm_start_storage is the storage of warm_start_from; give warm_start_from "
                "(the earlier study's name) too"
            )
        try:
            parse_url(warm_start_storage)
        except HpoTrainerError as exc:
            problems.append(f"warm_start_storage: {exc}")
    if not is_int(warm_start_top, 1):
        problems.append(
            f"warm_start_top must be an integer >= 1 (best trials of warm_start_from to "
            f"run first), got {warm_start_top!r}"
        )
    return problems


def _study_name_problems(name: Any) -> list[str]:
    """Say why ``name`` cannot name a study: it names its folder inside ``runs_dir``."""
    if not isinstance(name, str) or not name.strip():
        return [f"study_name must be a non-empty string, got {name!r}"]
    if any(c in name for c in "/\\\0:") or name.strip(".") == "" or name != name.strip():
        return [
            f"study_name names the study's folder inside runs_dir, so it must not contain "
            f"'/', '\\' or ':', be '.' or '..', or start or end with a space; got {name!r}. "
            f"Use letters, digits, '-', '_' and '.', e.g. {_safe_name(name)!r}"
        ]
    return []


def _safe_name(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return safe or "study"


def _folder_problems(runs_dir: Any, study_folder: Path) -> list[str]:
    """Say why the study's trial folders cannot be made (checked before any trial starts)."""
    for folder in (study_folder, *study_folder.parents):
        if folder.exists():
            if not folder.is_dir():
                return [
                    f"runs_dir {str(runs_dir)!r} cannot hold trial folders: {str(folder)!r} "
                    "is a file, not a folder; give another --runs-dir or move the file"
                ]
            if not os.access(folder, os.W_OK | os.X_OK):
                return [
                    f"runs_dir {str(runs_dir)!r} cannot hold trial folders: {str(folder)!r} "
                    "is not writable; give another --runs-dir"
                ]
            break
    return []


def make_config(
    task: SearchTask,
    *,
    epochs: int,
    n_trials: int | None = None,
    n_workers: int | None = None,
    devices: str | int | list[int | str] | None = None,
    workers_per_device: int = 1,
    study_name: str | None = None,
    storage: str | None = None,
    sampler: Any = DEFAULT_SAMPLER,
    pruner: Any = DEFAULT_PRUNER,
    seed: int | None = None,
    timeout: float | None = None,
    trial_timeout: float | None = None,
    direction: str | None = None,
    metric: str = "val/loss",
    objectives: Any = None,
    prune_on: str | None = None,
    max_failures: int | None = None,
    keep_checkpoints: int = 3,
    heartbeat_interval: int = heartbeat.INTERVAL,
    grace_period: int | None = None,
    provenance: Mapping[str, Any] | None = None,
    enqueue: Any = (),
    warm_start_from: str | None = None,
    warm_start_storage: str | None = None,
    warm_start_top: int = 5,
    **unknown: Any,
) -> SearchConfig:
    """Check the search options together and return the worker configuration.

    Args:
        task: What to train (a :class:`~hpo_trainer.Trainer`).
        epochs: Epochs per trial.
        n_trials: Finished trials the study should reach in total, across all workers and
            all runs of this search (a re-run continues to this total). Also accepted as
            ``trials`` (as ``--trials`` spells it); required under one of the two names.
        n_workers: Local workers (default 1, or one per device slot). Also accepted as
            ``workers``.
        devices: GPU ids to spread worker processes over: ``[0, 1]``, ``["0", "1"]`` or
            ``"0,1"`` (see :func:`hpo_trainer.train.devices.parse_devices`).
        workers_per_device: Workers sharing each device of ``devices``.
        study_name: The study's name (default: the task's name).
        storage: The storage URL (default: a SQLite file in the task's ``runs_dir``).
        sampler: A sampler name or object.
        pruner: A pruner name or object.
        seed: The base seed of the samplers and trials.
        timeout: Seconds after which a worker starts no new trial.
        trial_timeout: Seconds a trial may train; past them it stops at the next batch
            boundary and is pruned, its last completed epoch's value kept.
        direction: ``minimize`` or ``maximize`` (default: by the metric).
        metric: The metric reported and optimised.
        objectives: Two or more objectives for a multi-objective study, each
            ``"NAME:DIRECTION"`` (``"val/loss:min"``, ``"model/params:min"``) or a
            ``(name, direction)`` pair; see :mod:`hpo_trainer.search.objectives`. One
            objective is the same as ``metric`` and ``direction``.
        prune_on: The objective a multi-objective search prunes on (default: none, as
            Optuna cannot prune on several).
        max_failures: Failed trials after which workers stop (default: a quarter of the
            budget, at least 10).
        keep_checkpoints: Checkpoints of this many best trials are kept (0 keeps none).
        heartbeat_interval: Seconds between heartbeats of a running trial.
        grace_period: Seconds without a heartbeat before a trial counts as dead (default:
            four heartbeats).
        provenance: Facts recorded on the study (``study_file``, ``study_file_sha256``).
        enqueue: Known configurations to run first (they count toward the budget): params
            files as ``export`` writes them, or ``{target: {name: value}}`` dicts.
        warm_start_from: An earlier study whose best completed trials are run first.
        warm_start_storage: The storage URL of ``warm_start_from`` (default: ``storage``).
        warm_start_top: How many of the earlier study's best completed trials to run.
        **unknown: The aliases ``trials`` and ``workers`` (see :data:`ALIASES`); any other
            option is reported as unknown.

    Returns:
        The configuration each worker runs with.

    Raises:
        ConfigError: Listing every bad option (an alias given with another value than its
            canonical name is one).

    """
    unknown, problems = _renamed({"n_trials": n_trials, "n_workers": n_workers, **unknown})
    trials, workers = unknown.pop("n_trials"), unknown.pop("n_workers")  # checked below
    if trials is None:
        problems.append(
            "n_trials is required: the finished trials the study should reach in total, "
            "e.g. n_trials=20 (or trials=20)"
        )
    problems += _unknown_problems(unknown)
    problems += _number_problems(
        epochs=epochs,
        n_trials=trials,
        n_workers=workers,
        workers_per_device=workers_per_device,
        timeout=timeout,
        trial_timeout=trial_timeout,
        seed=seed,
        max_failures=max_failures,
        keep_checkpoints=keep_checkpoints,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
    )
    pairs, objective_problems = check_objectives(
        objectives,
        prune_on=prune_on,
        metrics=task.metric_names(),
        metric=None if metric == "val/loss" else metric,  # the default, or given as it
        direction=direction,
        pruner=pruner,
    )
    problems += objective_problems
    if len(pairs) == 1:  # one objective: a search on one metric, as with metric=
        (metric, direction), pairs = pairs[0], ()
    elif pairs:
        metric, direction = reported(pairs, prune_on)
        pruner = pruner if prune_on is not None else "none"  # Optuna cannot prune on several
    metric = "val/loss" if objective_problems else metric
    if direction is None or objective_problems:
        direction = default_direction(metric) if isinstance(metric, str) else "minimize"
    if storage is None:
        storage = default_url(task.runs_dir)
    problems += _choice_problems(task, sampler, pruner, metric, direction, storage)
    problems += _warm_start_problems(enqueue, warm_start_from, warm_start_storage, warm_start_top)
    name_problems = _study_name_problems(task.name if study_name is None else study_name)
    problems += name_problems or _folder_problems(
        task.runs_dir, Path(task.runs_dir) / (study_name or task.name)
    )
    try:
        ids = None if devices is None else parse_devices(devices)
    except ConfigError as exc:
        ids, problems = None, [*problems, str(exc)]
    raise_all(problems)
    task.check()
    slots = None if ids is None else tuple(device_slots(ids, workers_per_device))
    return SearchConfig(
        study_name=study_name or task.name,
        storage=storage,
        epochs=epochs,
        n_trials=trials,
        metric=metric,
        direction=direction,
        objectives=pairs,
        prune_on=prune_on if pairs else None,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        timeout=timeout,
        trial_timeout=None if trial_timeout is None else float(trial_timeout),
        max_failures=max_failures if max_failures is not None else max(10, trials // 4),
        keep_checkpoints=keep_checkpoints,
        runs_dir=str(task.runs_dir),
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period or heartbeat.GRACE_BEATS * heartbeat_interval,
        n_workers=workers or (len(slots) if slots else 1),
        slots=slots,
        provenance=dict(provenance or {}),
        enqueue=tuple([enqueue] if isinstance(enqueue, (str, os.PathLike, Mapping)) else enqueue),
        warm_start_from=warm_start_from,
        warm_start_storage=warm_start_storage,
        warm_start_top=warm_start_top,
    )
