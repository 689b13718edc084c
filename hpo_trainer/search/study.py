"""Creating or continuing a study, recording what the search asked of it, and warm starts.

A warm start queues known configurations (params files, dicts, the best trials of an
earlier study) as Optuna's waiting trials, which workers take before sampling new ones.
Each is checked against the task's spaces before the study is touched; queued trials count
toward the budget like any other, and a configuration already in the study (queued, run
or running) is not queued again, so a re-run of the same search adds nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import optuna

from hpo_trainer.base.errors import ConfigError
from hpo_trainer.base.files import atomic_write
from hpo_trainer.search import facts
from hpo_trainer.search.config import SearchConfig
from hpo_trainer.search.storage import absolute_url, mask_url, open_storage, same_storage

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
            other objectives, or its folder in the runs folder belongs to a study of the same
            name in another storage.

    """
    storage = storage_of(cfg)
    home = _claim_folder(cfg, exists=_exists(storage, cfg.identity.study_name))
    if cfg.goal.objectives:
        directions: dict[str, Any] = {"directions": [d for _, d in cfg.goal.objectives]}
    else:
        directions = {"direction": cfg.goal.direction}
    study = optuna.create_study(
        study_name=cfg.identity.study_name,
        storage=storage,
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
    if home is not None:
        record = {"study": cfg.identity.study_name, "storage": home}
        atomic_write(_folder_record(cfg), json.dumps(record, indent=2).encode())
    return study


#: The file in a study's folder (``RUNS_DIR/STUDY``) that names the storage it belongs to.
FOLDER_RECORD = "study.json"


def _folder_record(cfg: SearchConfig) -> Path:
    return Path(cfg.durability.runs_dir) / cfg.identity.study_name / FOLDER_RECORD


def _exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def _claim_folder(cfg: SearchConfig, *, exists: bool) -> str | None:
    """Refuse a new study whose folder holds a same-named study of another storage.

    Trial folders are named by study name and trial number, so two studies of one name in
    two storages would share them and remove each other's checkpoints. A study that exists
    in this storage already (continued, or migrated here with its trials) claims the folder.

    Returns:
        The storage to record in the folder (masked), or ``None`` if it is recorded already.

    """
    mine = absolute_url(cfg.identity.storage)
    path = _folder_record(cfg)
    try:
        theirs = json.loads(path.read_text()).get("storage")
    except (OSError, ValueError, AttributeError):
        return mask_url(mine)  # no record yet (or an unreadable one): this study claims it
    if not isinstance(theirs, str) or same_storage(theirs, mine):
        return None if isinstance(theirs, str) else mask_url(mine)
    if not exists:
        raise ConfigError(
            f"the folder {str(path.parent)!r} holds the trials of study "
            f"{cfg.identity.study_name!r} in another storage ({theirs}), not "
            f"{mask_url(mine)}: two studies of one name would overwrite each other's "
            "checkpoints. Give this study another name (--study-name), or another "
            f"--runs-dir, or continue that study with --storage {theirs}"
        )
    return mask_url(mine)


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
