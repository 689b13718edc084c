"""Two or more objectives: a multi-objective search, its checks and a trial's values.

An objective is a metric and a direction, written ``NAME:DIRECTION`` (``val/loss:min``,
``val/acc:max``; the direction may be left out: ``*/acc`` is maximised, anything else
minimised). A name is a metric the training loop records every epoch, or a measure of the
trained model: ``model/params`` (its parameter count) and ``model/latency_ms`` (the median
forward time of one batch on the trial's device, measured once after training).

A completed trial's values are the history metrics at its best epoch by the first history
objective (one model state, recorded as ``best_epoch``), then the model measures.

Optuna cannot prune a multi-objective study (``Trial.report`` and ``Trial.should_prune``
refuse it), so such a search trains every trial for all its epochs, unless ``prune_on``
names one history objective: its value is then written per epoch through the storage
(``set_trial_intermediate_value``, what ``Trial.report`` itself calls) and the pruner
decides on it alone, with that objective's direction. The trade-off: a trial that is poor on
that objective early is stopped even if it would have been on the Pareto front by another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna

from hpo_trainer.base.errors import did_you_mean
from hpo_trainer.train.best import best_epoch
from hpo_trainer.train.measure import forward_latency_ms, param_count

if TYPE_CHECKING:
    from hpo_trainer.search.config import SearchConfig
    from hpo_trainer.search.task import SearchTask
    from hpo_trainer.train.state import Run

#: Measures of the trained model that may be objectives beside the history metrics.
MODEL_MEASURES = ("model/params", "model/latency_ms")
_DIRECTIONS = {
    "min": "minimize",
    "minimize": "minimize",
    "max": "maximize",
    "maximize": "maximize",
}

#: An objective: (metric name, ``minimize`` or ``maximize``).
Objective = tuple[str, str]


def default_direction(metric: str) -> str:
    """Return the direction a metric is optimised in when none is given."""
    return "maximize" if metric.endswith("/acc") else "minimize"


def _parse(item: Any) -> tuple[Objective | None, str | None]:
    """Read ``NAME[:DIRECTION]`` or a ``(name, direction)`` pair; return it or a problem."""
    if isinstance(item, str):
        name, sep, word = item.rpartition(":")
        if not sep:
            name, word = item, ""
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        name, word = item
    else:
        return None, (
            f"an objective must be 'NAME:DIRECTION' (e.g. 'val/loss:min') or a (name, "
            f"direction) pair, got {item!r}"
        )
    if not isinstance(name, str) or not name:
        return None, f"objective {item!r} has no metric name; write it as e.g. 'val/loss:min'"
    if word == "":
        return (name, default_direction(name)), None
    if not isinstance(word, str) or word not in _DIRECTIONS:
        return None, (
            f"objective {item!r}: the direction must be min or max (or minimize, maximize), "
            f"got {word!r}; e.g. '{name}:min'"
        )
    return (name, _DIRECTIONS[word]), None


def check_objectives(
    objectives: Any,
    *,
    prune_on: Any,
    metrics: Sequence[str],
    metric: Any,
    direction: Any,
    pruner: Any,
) -> tuple[tuple[Objective, ...], list[str]]:
    """Read and check the objectives of a search.

    Args:
        objectives: ``None``, or the objectives as given (strings or pairs).
        prune_on: The objective to prune on, or ``None``.
        metrics: The metrics the training loop records.
        metric: The ``metric`` option as given (``None`` if not).
        direction: The ``direction`` option as given (``None`` if not).
        pruner: The pruner option (hyperband cannot prune a multi-objective study).

    Returns:
        The objectives as ``(name, direction)`` pairs (empty when none were given), and
        what is wrong with them (empty if nothing).

    """
    if objectives is None or (isinstance(objectives, (list, tuple)) and not objectives):
        if prune_on is not None:
            return (), [
                f"prune_on ({prune_on!r}) chooses which of several objectives the pruner "
                "judges; a search on one metric is pruned on that metric: leave prune_on out"
            ]
        return (), []
    items = [objectives] if isinstance(objectives, str) else objectives
    if not isinstance(items, (list, tuple)):
        return (), [
            f"objectives must be a list like ['val/loss:min', 'model/params:min'], got "
            f"{objectives!r}"
        ]
    problems: list[str] = []
    if metric is not None or direction is not None:
        problems.append(
            "give either objectives or metric/direction, not both; a single objective "
            "'NAME:DIRECTION' is the same as metric=NAME, direction=DIRECTION"
        )
    known = [*metrics, *MODEL_MEASURES]
    pairs: list[Objective] = []
    for item in items:
        pair, problem = _parse(item)
        if pair is None:
            problems.append(str(problem))
            continue
        name = pair[0]
        if name not in known:
            problems.append(
                f"objective {name!r} is neither a metric the training loop records nor a "
                f"model measure; choose from {', '.join(known)}." + did_you_mean(name, known)
            )
        elif any(name == p[0] for p in pairs):
            problems.append(f"objective {name!r} is given twice; name each metric once")
        else:
            pairs.append(pair)
    problems = problems or _multi_problems(pairs, prune_on, pruner)
    return ((), problems) if problems else (tuple(pairs), [])


def _multi_problems(pairs: list[Objective], prune_on: Any, pruner: Any) -> list[str]:
    """Say what does not fit a search on these (well-formed) objectives."""
    names = [n for n, _ in pairs]
    history = [n for n in names if n not in MODEL_MEASURES]
    if not history:
        return [
            f"the objectives {', '.join(names)} are all model measures; add a metric the "
            "training loop records, e.g. 'val/loss:min'"
        ]
    if len(pairs) == 1:
        if prune_on is None:
            return []
        return [
            f"prune_on ({prune_on!r}) chooses which of several objectives the pruner judges; "
            "with one objective the search is pruned on it: leave prune_on out"
        ]
    if prune_on is None:
        return []
    if prune_on not in names:
        return [
            f"prune_on must be one of the objectives ({', '.join(names)}), got "
            f"{prune_on!r}." + did_you_mean(str(prune_on), names)
        ]
    if prune_on in MODEL_MEASURES:
        return [
            f"prune_on {prune_on!r} is measured once after training, not per epoch; prune on "
            f"a metric the training loop records: {', '.join(history)}"
        ]
    if pruner == "hyperband" or isinstance(pruner, optuna.pruners.HyperbandPruner):
        return [
            "the hyperband pruner cannot prune on one objective of a multi-objective study "
            "(its brackets read the study's own directions); choose median, percentile, "
            "halving, patient or none"
        ]
    return []


def reported(objectives: Sequence[Objective], prune_on: str | None) -> Objective:
    """Return the objective written per epoch: ``prune_on``'s, else the first history one."""
    return next(
        (n, d)
        for n, d in objectives
        if (n == prune_on if prune_on is not None else n not in MODEL_MEASURES)
    )


def first_history(objectives: Sequence[Objective]) -> Objective:
    """Return the first objective read from the history: it chooses a trial's best epoch."""
    return next((n, d) for n, d in objectives if n not in MODEL_MEASURES)


def chosen_by(cfg: SearchConfig) -> Objective:
    """Return the metric and direction that choose a trial's best epoch in search ``cfg``."""
    goal = cfg.goal
    return first_history(goal.objectives) if goal.objectives else (goal.metric, goal.direction)


def trial_values(task: SearchTask, run: Run, cfg: SearchConfig) -> tuple[float | list[float], int]:
    """Return a trained run's value (one per objective in a multi-objective search) and its
    best epoch.

    The best epoch is chosen by :func:`chosen_by` with :func:`~hpo_trainer.train.best.best_epoch`
    (the rule :class:`~hpo_trainer.train.best.KeepBest` keeps weights by). History metrics are
    read at that epoch, model measures from the trained model. When no epoch of the choosing
    metric is finite, the best epoch is 0 and the values are read at the last epoch; the
    trial's outcome (:mod:`hpo_trainer.search.trial`) then refuses them as non-finite.

    Returns:
        The value (a float for one metric, a list for several objectives) and the best
        epoch (1-based; 0 when none is finite).

    """
    history = run.state.history
    metric, way = chosen_by(cfg)
    epoch = best_epoch(history[metric], way) or 0
    at = (epoch or len(history[metric])) - 1
    if not cfg.goal.objectives:
        return float(history[metric][at]), epoch
    values = []
    for name, _ in cfg.goal.objectives:
        if name == "model/params":
            values.append(float(param_count(run.state.model)))
        elif name == "model/latency_ms":
            batches = run.val_batches if run.val_batches is not None else run.train_batches
            values.append(
                forward_latency_ms(
                    run.state.model,
                    task.pass_batch,
                    next(iter(batches)),
                    device=run.state.device,
                    amp=run.amp,
                )
            )
        else:
            values.append(float(history[name][at]))
    return values, epoch
