"""The goal of a search: the metric (or objectives) it optimises, their directions, pruning."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hpo_trainer.search.objectives import (
    Objective,
    check_objectives,
    default_direction,
    reported,
)

#: The metric a search optimises when none is given.
DEFAULT_METRIC = "val/loss"


@dataclass(frozen=True)
class Goal:
    """What a search optimises.

    Attributes:
        metric: The metric reported every epoch and optimised (in a multi-objective search:
            ``prune_on``'s, or else the first history objective's).
        direction: ``minimize`` or ``maximize`` (of ``metric``).
        objectives: ``(metric, direction)`` of each objective of a multi-objective search;
            empty for a search on one metric.
        prune_on: The objective a multi-objective search prunes on, or ``None`` for none.

    """

    metric: str = DEFAULT_METRIC
    direction: str = "minimize"
    objectives: tuple[Objective, ...] = ()
    prune_on: str | None = None

    @classmethod
    def from_options(
        cls,
        *,
        objectives: Any,
        metric: Any,
        direction: Any,
        prune_on: Any,
        metrics: Sequence[str],
        pruner: Any,
    ) -> tuple[Goal, list[str]]:
        """Return the goal of these options, and every problem with them.

        One objective is a search on one metric, as with ``metric`` and ``direction``.

        Args:
            objectives: ``None``, or two or more objectives as given (see
                :mod:`hpo_trainer.search.objectives`).
            metric: The metric to optimise (``val/loss`` when left out).
            direction: ``minimize``, ``maximize``, or ``None`` for the metric's default.
            prune_on: The objective a multi-objective search prunes on, or ``None``.
            metrics: The metrics the training loop records.
            pruner: The pruner (hyperband cannot prune on one of several objectives).

        Returns:
            The goal, and one sentence per problem (empty if it is sound).

        """
        pairs, problems = check_objectives(
            objectives,
            prune_on=prune_on,
            metrics=metrics,
            metric=None if metric == DEFAULT_METRIC else metric,  # the default, or given as it
            direction=direction,
            pruner=pruner,
        )
        if len(pairs) == 1:  # one objective: a search on one metric, as with metric=
            (metric, direction), pairs = pairs[0], ()
        elif pairs:
            metric, direction = reported(pairs, prune_on)
        metric = DEFAULT_METRIC if problems else metric
        if direction is None or problems:
            direction = default_direction(metric) if isinstance(metric, str) else "minimize"
        goal = cls(
            metric=metric,
            direction=direction,
            objectives=pairs,
            prune_on=prune_on if pairs else None,
        )
        return goal, [*problems, *goal.problems(metrics)]

    def problems(self, metrics: Sequence[str] | None = None) -> list[str]:
        """Say what is wrong with the metric and its direction (empty if nothing).

        Args:
            metrics: The metrics the training loop records (``None``: not checked).

        """
        problems = []
        if metrics is not None and self.metric not in metrics:
            problems.append(
                f"metric {self.metric!r} is not produced by the training loop; choose one of "
                f"{', '.join(metrics)}"
            )
        if self.direction not in ("minimize", "maximize"):
            problems.append(f"direction must be 'minimize' or 'maximize', got {self.direction!r}")
        return problems
