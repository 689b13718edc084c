"""Creating or continuing a study, and recording what the search asked of it."""

from __future__ import annotations

import optuna

from hpo_trainer.errors import ConfigError
from hpo_trainer.search import facts
from hpo_trainer.search.config import SearchConfig
from hpo_trainer.search.storage import open_storage


def storage_of(cfg: SearchConfig) -> optuna.storages.BaseStorage:
    """Open the configured storage with the configured heartbeat."""
    return open_storage(
        cfg.storage, heartbeat_interval=cfg.heartbeat_interval, grace_period=cfg.grace_period
    )


def create_study(cfg: SearchConfig) -> optuna.Study:
    """Create the study, or load it if it exists (checking that its direction matches).

    The study records its metric and epochs the first time, and the budget and provenance
    (``hpo:<key>``) every time, so that status and export can report them.

    Raises:
        ConfigError: If an existing study of that name optimises the other direction.

    """
    study = optuna.create_study(
        study_name=cfg.study_name,
        storage=storage_of(cfg),
        direction=cfg.direction,
        load_if_exists=True,
    )
    existing = study.direction.name.lower()
    if existing != cfg.direction:
        raise ConfigError(
            f"study {cfg.study_name!r} already exists and {existing}s; search it with "
            f"direction={existing!r}, or use another study_name"
        )
    if study.metric_names is None:
        study.set_metric_names([cfg.metric])
    attrs = study.user_attrs
    if facts.EPOCHS_KEY not in attrs:
        study.set_user_attr(facts.EPOCHS_KEY, cfg.epochs)
        study.set_user_attr(facts.METRIC_KEY, cfg.metric)
    if attrs.get(facts.BUDGET_KEY) != cfg.n_trials:
        study.set_user_attr(facts.BUDGET_KEY, cfg.n_trials)
    for key, value in cfg.provenance.items():
        if attrs.get(f"hpo:{key}") != value:
            study.set_user_attr(f"hpo:{key}", value)
    return study
