"""``make_config``: every search option checked together into one frozen ``SearchConfig``."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpo_trainer.base.errors import did_you_mean, raise_all
from hpo_trainer.search.config.budget import Budget
from hpo_trainer.search.config.durability import Durability
from hpo_trainer.search.config.goal import DEFAULT_METRIC, Goal
from hpo_trainer.search.config.identity import StudyIdentity, name_problems
from hpo_trainer.search.config.placement import Placement
from hpo_trainer.search.config.strategy import Strategy
from hpo_trainer.search.config.warm import WarmStart
from hpo_trainer.search.heartbeat import INTERVAL
from hpo_trainer.search.storage import default_url
from hpo_trainer.search.strategies import DEFAULT_PRUNER, DEFAULT_SAMPLER
from hpo_trainer.search.task import SearchTask


@dataclass(frozen=True)
class SearchConfig:
    """Everything a worker needs besides the task, grouped by concern (picklable: it is sent
    to worker processes).

    Attributes:
        identity: Which study, in which storage, with which provenance.
        budget: Epochs per trial, finished trials, time limits, failures.
        goal: The metric or objectives optimised, their directions, what is pruned on.
        strategy: The sampler, the pruner and the seed.
        placement: The workers and the GPU slot of each.
        durability: Trial folders, kept checkpoints, heartbeats.
        warm_start: What runs first: known configurations, an earlier study's best.

    """

    identity: StudyIdentity
    budget: Budget
    goal: Goal = field(default_factory=Goal)
    strategy: Strategy = field(default_factory=Strategy)
    placement: Placement = field(default_factory=Placement)
    durability: Durability = field(default_factory=Durability)
    warm_start: WarmStart = field(default_factory=WarmStart)


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
    metric: str = DEFAULT_METRIC,
    objectives: Any = None,
    prune_on: str | None = None,
    max_failures: int | None = None,
    keep_checkpoints: int = 3,
    heartbeat_interval: int = INTERVAL,
    grace_period: int | None = None,
    provenance: Mapping[str, Any] | None = None,
    enqueue: Any = (),
    warm_start_from: str | None = None,
    warm_start_storage: str | None = None,
    warm_start_top: int = 5,
    **unknown: Any,
) -> SearchConfig:
    """Check the search options together and return the worker configuration.

    Each group of options checks itself (:class:`Budget`, :class:`Goal`, ...); every problem
    of every group is reported in one error.

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
    trials, workers = unknown.pop("n_trials"), unknown.pop("n_workers")
    problems += _unknown_problems(unknown)
    budget, found = Budget.from_options(
        epochs=epochs,
        n_trials=trials,
        timeout=timeout,
        trial_timeout=trial_timeout,
        max_failures=max_failures,
    )
    problems += found
    placement, found = Placement.from_options(
        n_workers=workers, devices=devices, workers_per_device=workers_per_device
    )
    problems += found
    goal, found = Goal.from_options(
        objectives=objectives,
        metric=metric,
        direction=direction,
        prune_on=prune_on,
        metrics=task.metric_names(),
        pruner=pruner,
    )
    strategy = Strategy(sampler=sampler, pruner=pruner, seed=seed)
    problems += found + strategy.problems()
    identity, found = StudyIdentity.from_options(
        study_name=task.name if study_name is None else study_name,
        storage=default_url(task.runs_dir) if storage is None else storage,
        provenance=provenance,
    )
    problems += found
    durability, found = Durability.from_options(
        runs_dir=task.runs_dir,
        keep_checkpoints=keep_checkpoints,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
    )
    problems += found
    if not name_problems(identity.study_name):
        problems += durability.folder_problems(identity.study_name)
    warm_start, found = WarmStart.from_options(
        enqueue=enqueue,
        warm_start_from=warm_start_from,
        warm_start_storage=warm_start_storage,
        warm_start_top=warm_start_top,
    )
    raise_all(problems + found)
    task.check()
    return SearchConfig(
        identity=identity,
        budget=budget,
        goal=goal,
        strategy=strategy.for_goal(goal),
        placement=placement,
        durability=durability,
        warm_start=warm_start,
    )
