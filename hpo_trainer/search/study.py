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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna

from hpo_trainer.errors import ConfigError, HpoTrainerError, raise_all
from hpo_trainer.params import group_params
from hpo_trainer.search import facts
from hpo_trainer.search.config import SearchConfig
from hpo_trainer.search.locks import budget_lock
from hpo_trainer.search.storage import open_storage
from hpo_trainer.search.task import SearchTask

logger = logging.getLogger(__name__)


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
    attrs = study.user_attrs
    _check_continuation(cfg, attrs)
    if study.metric_names is None:
        study.set_metric_names([cfg.metric])
    first = {facts.EPOCHS_KEY: cfg.epochs, facts.METRIC_KEY: cfg.metric}
    first.update({f"hpo:{key}": value for key, value in cfg.provenance.items()})
    for key, value in first.items():
        if key not in attrs:  # what the study began with; each trial records its own
            study.set_user_attr(key, value)
    if attrs.get(facts.BUDGET_KEY) != cfg.n_trials:
        study.set_user_attr(facts.BUDGET_KEY, cfg.n_trials)
    return study


def _check_continuation(cfg: SearchConfig, attrs: dict[str, Any]) -> None:
    """Refuse to continue a study on another metric or study file; warn on other epochs.

    Raises:
        ConfigError: If the study was searched on another metric or with another study file.

    """
    name = cfg.study_name
    metric = attrs.get(facts.METRIC_KEY)
    if metric is not None and metric != cfg.metric:
        raise ConfigError(
            f"study {name!r} scores its trials by {metric!r}, not {cfg.metric!r}; trials "
            f"scored by two metrics cannot be compared. Search it with --metric {metric}, or "
            "give the new search another --study-name"
        )
    recorded = attrs.get("hpo:study_file")
    given = cfg.provenance.get("study_file")
    if recorded and given and recorded != given:
        raise ConfigError(
            f"study {name!r} was searched with the study file {recorded}, not {given}; "
            "give the new search another --study-name, or search the study with its own file"
        )
    digest = attrs.get("hpo:study_file_sha256")
    if digest and cfg.provenance.get("study_file_sha256") not in (None, digest):
        logger.warning(
            "%s changed since study %r began; its new trials record the new file's hash, and "
            "export reports the hash of the best trial's file",
            given,
            name,
        )
    epochs = attrs.get(facts.EPOCHS_KEY)
    if epochs is not None and epochs != cfg.epochs:
        logger.warning(
            "study %r began with %s epochs per trial; its new trials train up to %d (each "
            "trial records its own, and export reports the best trial's)",
            name,
            epochs,
            cfg.epochs,
        )


def warm_start_params(task: SearchTask, cfg: SearchConfig) -> list[tuple[str, dict[str, Any]]]:
    """Read the configurations to run first and check them against the task's spaces.

    Returns:
        ``(where it came from, Optuna's flat params {"target.name": stored value})`` of
        each, in order: ``cfg.enqueue``, then the best trials of ``cfg.warm_start_from``.

    Raises:
        ConfigError: Naming every unreadable source and every parameter outside the space
            (``target.name``, the value, what the space allows).

    """
    sources: list[tuple[str, Mapping[str, Any]]] = []
    problems: list[str] = []
    for i, item in enumerate(cfg.enqueue):
        try:
            sources.append(_read_params(item, i))
        except HpoTrainerError as exc:
            problems.append(str(exc))
    if cfg.warm_start_from is not None:
        try:
            sources += _best_of_study(cfg)
        except HpoTrainerError as exc:
            problems.append(str(exc))
    flat = []
    for where, params in sources:
        values, bad = _flat_params(task, where, params)
        flat.append((where, values))
        problems += bad
    raise_all(problems)
    return flat


def _read_params(item: Any, index: int) -> tuple[str, Mapping[str, Any]]:
    """Return ``(name, params)`` of a params file (as ``export`` writes it) or a dict."""
    if isinstance(item, Mapping):
        data: Any = dict(item)
        where = f"enqueue[{index}]"
    else:
        where = str(item)
        try:
            data = json.loads(Path(item).read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"enqueue: params file {where!r} does not exist; write one with "
                "`hpo-trainer export --out best.json`"
            ) from None
        except (OSError, ValueError, RecursionError) as exc:
            raise ConfigError(
                f"enqueue: params file {where!r} is not readable params JSON ({exc}); export "
                "it again with `hpo-trainer export`"
            ) from None
    params = (
        data.get("params", data if "format" not in data else None)
        if isinstance(data, dict)
        else None
    )
    if not isinstance(params, Mapping):
        raise ConfigError(
            f"enqueue: {where} must hold {{target: {{name: value}}}} or a params file's "
            f"'params', got {data!r:.200}"
        )
    return where, group_params(params)


def _best_of_study(cfg: SearchConfig) -> list[tuple[str, Mapping[str, Any]]]:
    """Return the params of the ``warm_start_top`` best completed trials of the old study."""
    url = cfg.warm_start_storage or cfg.storage
    name = cfg.warm_start_from
    try:
        storage = open_storage(url, heartbeat_interval=None, grace_period=None, must_exist=True)
        old = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ConfigError(
            f"warm_start_from: no study {name!r} in that storage (studies there: "
            f"{', '.join(names) or 'none'}); name one of them, or give --warm-start-storage"
        ) from None
    best = facts.ranked(old)[: cfg.warm_start_top]
    if not best:
        raise ConfigError(
            f"warm_start_from: study {name!r} has no completed trial to start from; run it "
            "until one completes, or leave out --warm-start-from"
        )
    if name == cfg.study_name and url == cfg.storage:
        logger.warning("warm-starting study %r from itself: its best trials are run again", name)
    return [(f"study {name!r} trial {t.number}", group_params(t.params)) for t in best]


def _flat_params(
    task: SearchTask, where: str, params: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, Any], list[str]]:
    """Return Optuna's flat params of one configuration, and why parts do not fit the space.

    Names the space searches but ``params`` leaves out are sampled as usual.
    """
    spaces = task.spaces
    flat: dict[str, Any] = {}
    problems = []
    for target, values in params.items():
        if target not in spaces:
            problems.append(
                f"{where}: target {target!r} has no search space (targets: "
                f"{', '.join(spaces) or 'none'}); remove its parameters"
            )
            continue
        searched = spaces[target].searched
        for name, value in values.items():
            if name not in searched:
                problems.append(
                    f"{where}: {target}.{name}={value!r} is not searched in this space "
                    f"(searched in {target}: {', '.join(searched) or 'none'}); remove it"
                )
                continue
            dim = searched[name]
            try:
                flat[f"{target}.{name}"] = dim.encode(dim.decode(value))
            except ValueError as exc:
                problems.append(f"{where}: {target}.{name} {exc} (the space: {dim})")
    return flat, problems


def enqueue_known(
    study: optuna.Study, cfg: SearchConfig, known: list[tuple[str, dict[str, Any]]]
) -> int:
    """Queue each known configuration unless the study already has it; return how many.

    Under the budget lock, so that workers started at once on other machines do not queue
    the same configuration twice.
    """
    if not known:
        return 0
    added = 0
    storage = getattr(study._storage, "_backend", study._storage)  # past Optuna's cache
    with budget_lock(cfg.storage, storage, cfg.study_name):
        for where, flat in known:
            before = len(study.get_trials(deepcopy=False))
            study.enqueue_trial(flat, user_attrs={"enqueued_from": where}, skip_if_exists=True)
            added += len(study.get_trials(deepcopy=False)) > before
    logger.info("queued %d of %d known configurations to run first", added, len(known))
    trials = study.get_trials(deepcopy=False)
    left = cfg.n_trials - facts.finished(trials) - len(facts.running(trials))
    waiting = sum(t.state == optuna.trial.TrialState.WAITING for t in trials)
    if waiting > left:
        logger.warning(
            "%d queued configurations but room for %d more trials in the budget of %d: "
            "the rest wait for a larger --trials",
            waiting,
            max(left, 0),
            cfg.n_trials,
        )
    return added
