"""Facts about a study, computed in one place: finished trials, failures, the best trials,
the budget and a summary. The worker loop, progress, status, export and report all read
them from here, so they can never disagree.

A trial is *finished* when it completed or was pruned: both count toward the budget. A
trial *failed by itself* when its own code raised (it has a ``failure`` attribute); a trial
failed because its worker died or was stopped is retried, and does not count.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

#: The states that count toward the budget.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: Study attribute keys (``hpo:<key>``) under which a search records what it was asked.
BUDGET_KEY = "hpo:n_trials"
METRIC_KEY = "hpo:metric"
EPOCHS_KEY = "hpo:epochs"


def finished(trials: Sequence[FrozenTrial]) -> int:
    """Return how many of ``trials`` count toward the budget (complete or pruned)."""
    return sum(1 for t in trials if t.state in FINISHED)


def running(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Return the running trials."""
    return [t for t in trials if t.state == TrialState.RUNNING]


def failures(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Return the trials that failed by themselves (not by a dead or stopped worker)."""
    return [t for t in trials if t.state == TrialState.FAIL and "failure" in t.user_attrs]


def ranked(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """Return the completed trials with a finite value, best first by the study's direction."""
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    complete = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
    ]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(complete, key=lambda t: t.value, reverse=maximize)  # type: ignore[arg-type,return-value]


def best(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> FrozenTrial | None:
    """Return the best completed trial, or ``None`` if none has completed."""
    order = ranked(study, trials)
    return order[0] if order else None


def budget(study: optuna.Study) -> int | None:
    """Return the study's budget of finished trials, as the last search set it."""
    value = study.user_attrs.get(BUDGET_KEY)
    return int(value) if value is not None else None


def metric(study: optuna.Study) -> str | None:
    """Return the metric the study optimises, as its first search recorded it."""
    value = study.user_attrs.get(METRIC_KEY)
    if value is None and study.metric_names:
        value = study.metric_names[0]
    return value


def summary(study: optuna.Study) -> dict[str, Any]:
    """Return a JSON-ready summary: states, best, running trials, budget and time left."""
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    top = best(study, trials)
    now_running = running(trials)
    times = [t.user_attrs["wall_time"] for t in trials if "wall_time" in t.user_attrs]
    mean_time = sum(times) / len(times) if times else None
    total = budget(study)
    done = finished(trials)
    eta = None
    if total is not None and mean_time is not None:
        # the trials left, run by as many workers as are running now (at least one)
        eta = round(max(0, total - done) * mean_time / max(1, len(now_running)))
    result: dict[str, Any] = {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "metric": metric(study),
        "trials": len(trials),
        "states": dict(states),
        "finished": done,
    }
    if top is not None:
        result["best"] = {"trial": top.number, "value": top.value, "params": top.params}
    result["running"] = [
        {
            "trial": t.number,
            "epoch": max(t.intermediate_values, default=0),
            "worker": t.user_attrs.get("worker"),
            "host": t.user_attrs.get("host"),
            "cuda_visible_devices": t.user_attrs.get("cuda_visible_devices"),
        }
        for t in now_running
    ]
    result["mean_trial_seconds"] = round(mean_time, 3) if mean_time is not None else None
    result["budget"] = total
    result["eta_seconds"] = eta
    return result
