"""Facts about a study, computed in one place: finished trials, failures, the best trials,
the Pareto front, the budget and a summary. The worker loop, progress, status, export and
report all read them from here, so they can never disagree.

A trial is *finished* when it completed or was pruned: both count toward the budget. A
trial *failed by itself* when its own code raised or its value was not finite (it has a
``failure`` attribute); a trial failed because its worker died or was stopped is retried,
and does not count.

In a multi-objective study the *Pareto front* is the completed trials that no other completed
trial dominates (as good in every objective and better in one): Optuna's
``study.best_trials``. Its trials are ranked by the first objective, and the *best* trial is
the front's best by the first objective (what ``export`` picks unless told otherwise).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo_trainer.search.heartbeat import root_number

#: The states that count toward the budget.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: The user attribute of a trial that failed by itself: what went wrong.
FAILURE_KEY = "failure"
#: Study attribute keys (``hpo:<key>``) under which a search records what it was asked.
BUDGET_KEY = "hpo:n_trials"
METRIC_KEY = "hpo:metric"
OBJECTIVES_KEY = "hpo:objectives"
EPOCHS_KEY = "hpo:epochs"


def finished(trials: Sequence[FrozenTrial]) -> int:
    """Return how many of ``trials`` count toward the budget (complete or pruned)."""
    return sum(1 for t in trials if t.state in FINISHED)


def running(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Return the running trials."""
    return [t for t in trials if t.state == TrialState.RUNNING]


def failed_by_itself(trial: FrozenTrial) -> bool:
    """Return whether ``trial`` failed by itself: its own code raised, or its value was not
    finite (it has the ``failure`` attribute). A trial failed because its worker died or
    was stopped did not: it is retried from its checkpoint.
    """
    return trial.state == TrialState.FAIL and FAILURE_KEY in trial.user_attrs


def failures(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Return the trials that failed by themselves (:func:`failed_by_itself`).

    The one count of failures: ``max_failures``, the progress line and status read it.
    """
    return [t for t in trials if failed_by_itself(t)]


def first_attempt(trial: FrozenTrial) -> int:
    """Return the number of the first attempt of ``trial``: the folder its checkpoints share.

    A retry records it as ``retry_of`` when it ends; one that has not ended yet (its worker
    died) is known by its retry history (:func:`~hpo_trainer.search.heartbeat.root_number`).
    """
    return int(trial.user_attrs.get("retry_of", root_number(trial)))


#: What status calls a failed trial that is not a failure (see :func:`outcome`).
INTERRUPTED = "INTERRUPTED"
RETRIED = "RETRIED"
ABANDONED = "ABANDONED"


def retried(trials: Sequence[FrozenTrial]) -> set[int]:
    """Return the numbers of the attempts that were queued again (their retry history)."""
    return {int(n) for t in trials for n in t.system_attrs.get("retry_history", ())}


def outcome(trial: FrozenTrial, again: set[int]) -> str:
    """Return the name under which status counts ``trial``.

    A trial's state name (``COMPLETE``, ``PRUNED``, ``RUNNING``, ...), except for a FAIL
    trial that is not a failure (:func:`failures`): ``INTERRUPTED`` if a signal stopped
    it, ``RETRIED`` if its worker died and it was queued again, ``ABANDONED`` if its worker
    died and it was not (it ran out of retries).

    Args:
        trial: The trial.
        again: The numbers of the attempts that were queued again (:func:`retried`).

    """
    if trial.state != TrialState.FAIL or failed_by_itself(trial):
        return trial.state.name
    if "interrupted" in trial.user_attrs:
        return INTERRUPTED
    return RETRIED if trial.number in again else ABANDONED


def outcomes(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    """Return how many trials have each :func:`outcome`; ``FAIL`` counts :func:`failures`."""
    again = retried(trials)
    return dict(Counter(outcome(t, again) for t in trials))


def is_multi(study: optuna.Study) -> bool:
    """Return whether the study has two or more objectives."""
    return len(study.directions) > 1


def objectives(study: optuna.Study) -> list[tuple[str, str]]:
    """Return ``(metric name, direction)`` of each objective of the study, in order."""
    directions = [d.name.lower() for d in study.directions]
    if len(directions) == 1:
        return [(metric(study) or "value", directions[0])]
    names = study.metric_names or [f"values_{i}" for i in range(len(directions))]
    return list(zip(names, directions))


def _signs(study: optuna.Study) -> list[int]:
    """Return +1 per minimised and -1 per maximised objective (smaller signed is better)."""
    return [1 if d == optuna.study.StudyDirection.MINIMIZE else -1 for d in study.directions]


def _front(complete: Sequence[FrozenTrial], signs: Sequence[int]) -> list[FrozenTrial]:
    """Return the trials of ``complete`` that no other one dominates, in their order."""
    keys = [[s * v for s, v in zip(signs, t.values)] for t in complete]

    def dominated(a: list[float]) -> bool:
        return any(all(x <= y for x, y in zip(b, a)) and b != a for b in keys)

    return [t for t, key in zip(complete, keys) if not dominated(key)]


def pareto_front(
    study: optuna.Study, trials: Sequence[FrozenTrial] | None = None
) -> list[FrozenTrial]:
    """Return the Pareto front (``study.best_trials``), best first by the first objective.

    In a single-objective study this is the best trial (or trials of equal value).
    """
    order = ranked(study, trials)
    if not is_multi(study):
        return [t for t in order if t.values == order[0].values] if order else []
    return _front(order, _signs(study))


def ranked(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """Return the completed trials with finite values, best first.

    One objective: by the study's direction. Several: the Pareto front first, then the
    other trials, each part by the first objective.
    """
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if is_multi(study):
        return _ranked_multi(study, trials)
    complete = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
    ]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(complete, key=lambda t: t.value, reverse=maximize)  # type: ignore[arg-type,return-value]


def _ranked_multi(study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    signs = _signs(study)
    complete = sorted(
        (
            t
            for t in trials
            if t.state == TrialState.COMPLETE
            and t.values is not None
            and all(math.isfinite(v) for v in t.values)
        ),
        key=lambda t: signs[0] * t.values[0],
    )
    front = _front(complete, signs)
    on_front = {t.number for t in front}
    return front + [t for t in complete if t.number not in on_front]


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
    """Return a JSON-ready summary: states, best, running trials, budget and time left.

    A multi-objective study's summary also has ``objectives`` and ``pareto_front``; its
    ``metric``, ``direction`` and ``best`` are those of the first objective.
    """
    trials = study.get_trials(deepcopy=False)
    states = outcomes(trials)
    top = best(study, trials)
    now_running = running(trials)
    goals = objectives(study)
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
        "direction": goals[0][1],
        "metric": metric(study) if len(goals) == 1 else goals[0][0],
        "trials": len(trials),
        "states": states,
        "finished": done,
    }
    if len(goals) > 1:
        result["objectives"] = [{"metric": n, "direction": d} for n, d in goals]
    if top is not None:
        result["best"] = {"trial": top.number, "value": top.values[0], "params": top.params}
        if len(goals) > 1:
            result["best"]["values"] = top.values
    if len(goals) > 1:
        result["pareto_front"] = [
            {"trial": t.number, "values": t.values, "params": t.params}
            for t in pareto_front(study, trials)
        ]
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


def recipe(study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
    """Return what made a completed trial's value, for a final run to repeat it.

    Returns:
        ``study``, ``trial``, ``metric``, ``direction`` and ``value`` of the objective that
        chose the trial's best epoch (the first read from the history), ``epochs`` (the
        trial's maximum), ``best_epoch``, ``seed`` and ``threads`` (``None`` where a trial
        written by an older version did not record them), and ``checkpoint`` (the trial's kept
        checkpoint file, which may since have been cleaned up).

    """
    # Imported here: the rest of this module serves the trial-start path, which loads without
    # PyTorch (hpo_trainer.search.start; objectives measures models with torch).
    from hpo_trainer.search.objectives import MODEL_MEASURES

    goals = objectives(study)
    # The objective that chose the trial's best epoch: the first one read from the history.
    index = next((i for i, (n, _) in enumerate(goals) if n not in MODEL_MEASURES), 0)
    attrs = trial.user_attrs
    return {
        "study": study.study_name,
        "trial": trial.number,
        "value": trial.values[index] if trial.values else None,
        "metric": goals[index][0],
        "direction": goals[index][1],
        "epochs": attrs.get("max_epochs", study.user_attrs.get(EPOCHS_KEY)),
        "best_epoch": attrs.get("best_epoch"),
        "seed": attrs.get("seed"),
        "threads": attrs.get("threads"),
        "checkpoint": attrs.get("checkpoint"),
    }
