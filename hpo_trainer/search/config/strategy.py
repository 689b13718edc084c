"""The strategy of a search: how trials are proposed (sampler), stopped early (pruner), seeded."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpo_trainer.base.errors import HpoTrainerError, is_seed
from hpo_trainer.search.strategies import (
    DEFAULT_PRUNER,
    DEFAULT_SAMPLER,
    check_pruner,
    check_sampler,
)

if TYPE_CHECKING:
    from hpo_trainer.search.config.goal import Goal


@dataclass(frozen=True)
class Strategy:
    """How a search proposes, stops and seeds its trials.

    Attributes:
        sampler: A sampler name or object (see :mod:`hpo_trainer.search.strategies`).
        pruner: A pruner name or object; ``"none"`` in a search on several objectives that
            prunes on none of them (Optuna cannot prune on several).
        seed: The base seed: worker ``i`` samples with ``seed + i * stride``, trial ``n``
            trains with ``seed + n`` (``None``: unseeded).

    """

    sampler: Any = DEFAULT_SAMPLER
    pruner: Any = DEFAULT_PRUNER
    seed: int | None = None

    def problems(self) -> list[str]:
        """Say which choices are unknown and whether the seed is out of range (empty if none)."""
        problems = []
        for check, value in ((check_sampler, self.sampler), (check_pruner, self.pruner)):
            try:
                check(value)
            except HpoTrainerError as exc:
                problems.append(str(exc))
        if self.seed is not None and not is_seed(self.seed):
            problems.append(
                f"seed must be an integer in [0, 2**32 - 1] or None, got {self.seed!r}"
            )
        return problems

    def for_goal(self, goal: Goal) -> Strategy:
        """Return the strategy a search on ``goal`` runs with.

        A search on several objectives that prunes on none of them runs without a pruner:
        Optuna cannot prune on several.
        """
        if goal.objectives and goal.prune_on is None:
            return dataclasses.replace(self, pruner="none")
        return self
