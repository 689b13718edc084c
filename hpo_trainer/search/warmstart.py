"""Warm starts: configurations run first, from params files, dicts or an earlier study.

Every configuration is checked against the task's spaces before the study is touched, and
queued under the budget lock with Optuna's duplicate check, so running the same search
again never queues one twice. Queued trials count toward the budget.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import optuna

from hpo_trainer.base.errors import ConfigError, HpoTrainerError, raise_all
from hpo_trainer.codec.params import group_params, read_file
from hpo_trainer.search import facts, optuna_api
from hpo_trainer.search.config import SearchConfig
from hpo_trainer.search.locks import budget_lock
from hpo_trainer.search.storage import open_storage, same_storage
from hpo_trainer.search.task import SearchTask

logger = logging.getLogger(__name__)


def warm_start_params(task: SearchTask, cfg: SearchConfig) -> list[tuple[str, dict[str, Any]]]:
    """Read the configurations to run first and check them against the task's spaces.

    Returns:
        ``(where it came from, Optuna's flat params {"target.name": stored value})`` of
        each, in order: ``cfg.warm_start.enqueue``, then the best trials of
        ``cfg.warm_start.warm_start_from``.

    Raises:
        ConfigError: Naming every unreadable source and every parameter outside the space
            (``target.name``, the value, what the space allows).

    """
    sources: list[tuple[str, Mapping[str, Any]]] = []
    problems: list[str] = []
    for i, item in enumerate(cfg.warm_start.enqueue):
        try:
            sources.append(_read_params(item, i))
        except HpoTrainerError as exc:
            problems.append(str(exc))
    if cfg.warm_start.warm_start_from is not None:
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
    if not isinstance(item, Mapping):
        try:
            return str(item), read_file(item)["params"]
        except ConfigError as exc:
            raise ConfigError(f"enqueue: {exc}") from None
    params = item.get("params", item if "format" not in item else None)
    if not isinstance(params, Mapping):
        raise ConfigError(
            f"enqueue[{index}] must hold {{target: {{name: value}}}} or a params file's "
            f"'params', got {dict(item)!r:.200}"
        )
    return f"enqueue[{index}]", group_params(params)


def _best_of_study(cfg: SearchConfig) -> list[tuple[str, Mapping[str, Any]]]:
    """Return the params of the ``warm_start_top`` best completed trials of the old study."""
    url = cfg.warm_start.warm_start_storage or cfg.identity.storage
    name = cfg.warm_start.warm_start_from
    try:
        storage = open_storage(url, must_exist=True)
        old = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ConfigError(
            f"warm_start_from: no study {name!r} in that storage (studies there: "
            f"{', '.join(names) or 'none'}); name one of them, or give --warm-start-storage"
        ) from None
    best = facts.ranked(old)[: cfg.warm_start.warm_start_top]
    if not best:
        raise ConfigError(
            f"warm_start_from: study {name!r} has no completed trial to start from; run it "
            "until one completes, or leave out --warm-start-from"
        )
    if name == cfg.identity.study_name and same_storage(url, cfg.identity.storage):
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
    storage = optuna_api.backend_of(study)
    with budget_lock(cfg.identity.storage, storage, cfg.identity.study_name):
        for where, flat in known:
            before = len(study.get_trials(deepcopy=False))
            study.enqueue_trial(flat, user_attrs={"enqueued_from": where}, skip_if_exists=True)
            added += len(study.get_trials(deepcopy=False)) > before
    logger.info("queued %d of %d known configurations to run first", added, len(known))
    trials = study.get_trials(deepcopy=False)
    left = cfg.budget.n_trials - facts.finished(trials) - len(facts.running(trials))
    waiting = sum(t.state == optuna.trial.TrialState.WAITING for t in trials)
    if waiting > left:
        logger.warning(
            "%d queued configurations but room for %d more trials in the budget of %d: "
            "the rest wait for a larger --trials",
            waiting,
            max(left, 0),
            cfg.budget.n_trials,
        )
    return added
