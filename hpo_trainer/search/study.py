"""Creating or continuing a study, recording what the search asked of it, and warm starts.

A warm start queues known configurations (params files, dicts, the best trials of an
earlier study) as Optuna's waiting trials, which workers take before sampling new ones.
Each is checked against the task's spaces before the study is touched; queued trials count
toward the budget like any other, and a configuration already in the study (queued, run
or running) is not queued again, so a re-run of the same search adds nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna

from hpo_trainer.base.errors import ConfigError
from hpo_trainer.search import facts
from hpo_trainer.search.config import SearchConfig
from hpo_trainer.search.storage import open_storage

logger = logging.getLogger(__name__)


def storage_of(cfg: SearchConfig) -> optuna.storages.BaseStorage:
    """Open the configured storage."""
    return open_storage(cfg.identity.storage)


def create_study(cfg: SearchConfig) -> optuna.Study:
    """Create the study, or load it if it exists (checking that its objectives match).

    The study records its metric (or objectives: one direction and metric name each) and
    epochs the first time, and the budget and provenance (``hpo:<key>``) every time, so that
    status and export can report them.

    Raises:
        ConfigError: If an existing study of that name optimises the other direction, or
            other objectives.

    """
    if cfg.goal.objectives:
        directions: dict[str, Any] = {"directions": [d for _, d in cfg.goal.objectives]}
    else:
        directions = {"direction": cfg.goal.direction}
    study = optuna.create_study(
        study_name=cfg.identity.study_name,
        storage=storage_of(cfg),
        load_if_exists=True,
        **directions,
    )
    if cfg.goal.objectives or len(study.directions) > 1:
        _check_objectives(cfg, study)
    elif (existing := study.direction.name.lower()) != cfg.goal.direction:
        raise ConfigError(
            f"study {cfg.identity.study_name!r} already exists and {existing}s; search it with "
            f"direction={existing!r}, or use another study_name"
        )
    attrs = study.user_attrs
    _check_continuation(cfg, attrs)
    names = [n for n, _ in cfg.goal.objectives] or [cfg.goal.metric]
    if study.metric_names is None:
        study.set_metric_names(names)
    first: dict[str, Any] = {facts.EPOCHS_KEY: cfg.budget.epochs}
    first.update(
        {facts.OBJECTIVES_KEY: names} if cfg.goal.objectives else {facts.METRIC_KEY: names[0]}
    )
    first.update({f"hpo:{key}": value for key, value in cfg.identity.provenance.items()})
    for key, value in first.items():
        if key not in attrs:  # what the study began with; each trial records its own
            study.set_user_attr(key, value)
    if attrs.get(facts.BUDGET_KEY) != cfg.budget.n_trials:
        study.set_user_attr(facts.BUDGET_KEY, cfg.budget.n_trials)
    return study


def _check_objectives(cfg: SearchConfig, study: optuna.Study) -> None:
    """Refuse to continue a study on objectives other than its own (names or directions).

    Raises:
        ConfigError: If the study was searched on other objectives, or on one metric.

    """
    have = facts.objectives(study)
    want = list(cfg.goal.objectives) or [(cfg.goal.metric, cfg.goal.direction)]
    if study.metric_names is None and [d for _, d in have] == [d for _, d in want]:
        return  # created just now (its names are set next), or unnamed with these directions
    if have != want:
        flags = " ".join(f"--objective {n}:{d[:3]}" for n, d in have)
        raise ConfigError(
            f"study {cfg.identity.study_name!r} already exists with the objectives "
            f"{_describe(have)}, not {_describe(want)}; trials scored by other objectives "
            f"cannot be compared. Search it with {flags}, or give the new search another "
            "--study-name"
        )


def _describe(objectives: list[tuple[str, str]]) -> str:
    return ", ".join(f"{n}:{d[:3]}" for n, d in objectives)


def _check_continuation(cfg: SearchConfig, attrs: dict[str, Any]) -> None:
    """Refuse to continue a study on another metric or study file; warn on other epochs.

    Raises:
        ConfigError: If the study was searched on another metric or with another study file.

    """
    name = cfg.identity.study_name
    metric = attrs.get(facts.METRIC_KEY)
    if metric is not None and metric != cfg.goal.metric:
        raise ConfigError(
            f"study {name!r} scores its trials by {metric!r}, not {cfg.goal.metric!r}; trials "
            f"scored by two metrics cannot be compared. Search it with --metric {metric}, or "
            "give the new search another --study-name"
        )
    recorded = attrs.get("hpo:study_file")
    given = cfg.identity.provenance.get("study_file")
    if recorded and given and recorded != given:
        raise ConfigError(
            f"study {name!r} was searched with the study file {recorded}, not {given}; "
            "give the new search another --study-name, or search the study with its own file"
        )
    digest = attrs.get("hpo:study_file_sha256")
    if digest and cfg.identity.provenance.get("study_file_sha256") not in (None, digest):
        logger.warning(
            "%s changed since study %r began; its new trials record the new file's hash, and "
            "export reports the hash of the best trial's file",
            given,
            name,
        )
    epochs = attrs.get(facts.EPOCHS_KEY)
    if epochs is not None and epochs != cfg.budget.epochs:
        logger.warning(
            "study %r began with %s epochs per trial; its new trials train up to %d (each "
            "trial records its own, and export reports the best trial's)",
            name,
            epochs,
            cfg.budget.epochs,
        )
