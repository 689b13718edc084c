"""A search's warm start: known configurations and an earlier study's best trials, run first."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hpo_trainer.base.errors import HpoTrainerError, is_int
from hpo_trainer.search.storage import parse_url


@dataclass(frozen=True)
class WarmStart:
    """What a search runs first (it counts toward the budget).

    The options are checked for their form here; their contents (params that fit the
    spaces, a study that exists) when the search starts
    (:mod:`hpo_trainer.search.warmstart`).

    Attributes:
        enqueue: Known configurations to run first: params file paths (as ``export``
            writes them) or ``{target: {name: value}}`` dicts.
        warm_start_from: An earlier study whose best completed trials are run first.
        warm_start_storage: The storage URL of ``warm_start_from`` (``None``: the
            search's own storage).
        warm_start_top: How many of the earlier study's best completed trials to run.

    """

    enqueue: tuple[Any, ...] = ()
    warm_start_from: str | None = None
    warm_start_storage: str | None = None
    warm_start_top: int = 5

    @classmethod
    def from_options(
        cls,
        *,
        enqueue: Any,
        warm_start_from: Any,
        warm_start_storage: Any,
        warm_start_top: Any,
    ) -> tuple[WarmStart, list[str]]:
        """Return the warm start of these options, and every problem with their form.

        Args:
            enqueue: One params file or dict, or a list of them.
            warm_start_from: An earlier study's name, or ``None``.
            warm_start_storage: Its storage URL, or ``None`` for the search's own.
            warm_start_top: How many of its best completed trials to run first.

        Returns:
            The warm start, and one sentence per problem (empty if it is sound).

        """
        if isinstance(enqueue, (str, os.PathLike, Mapping)):
            enqueue = (enqueue,)
        elif isinstance(enqueue, list):
            enqueue = tuple(enqueue)
        warm = cls(
            enqueue=enqueue,
            warm_start_from=warm_start_from,
            warm_start_storage=warm_start_storage,
            warm_start_top=warm_start_top,
        )
        return warm, warm.problems()

    def problems(self) -> list[str]:
        """Say which warm-start options are malformed (empty if none)."""
        problems = []
        if not isinstance(self.enqueue, tuple):
            problems.append(
                f"enqueue must be a list of params files or {{target: {{name: value}}}} "
                f"dicts, got {self.enqueue!r}"
            )
        else:
            problems.extend(
                f"enqueue[{i}] must be a params file path or a {{target: {{name: value}}}} "
                f"dict, got {item!r}"
                for i, item in enumerate(self.enqueue)
                if not isinstance(item, (str, os.PathLike, Mapping))
            )
        source = self.warm_start_from
        if source is not None and (not isinstance(source, str) or not source.strip()):
            problems.append(f"warm_start_from must name an earlier study, got {source!r}")
        if self.warm_start_storage is not None:
            if source is None:
                problems.append(
                    "warm_start_storage is the storage of warm_start_from; give "
                    "warm_start_from (the earlier study's name) too"
                )
            try:
                parse_url(self.warm_start_storage)
            except HpoTrainerError as exc:
                problems.append(f"warm_start_storage: {exc}")
        if not is_int(self.warm_start_top, 1):
            problems.append(
                f"warm_start_top must be an integer >= 1 (best trials of warm_start_from "
                f"to run first), got {self.warm_start_top!r}"
            )
        return problems
