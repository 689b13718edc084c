"""The task: what the search engine needs from whatever describes the training.

:class:`hpo_trainer.Trainer` is one; anything with these few members can be searched. The
engine depends on this interface only, never on the facade above it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hpo_trainer.space import Hyperparameters
    from hpo_trainer.train.callback import Callback
    from hpo_trainer.train.state import FitState, Run


class SearchTask(Protocol):
    """A trainable, searchable description of a model, its data and its search spaces.

    Attributes:
        name: The default study name.
        runs_dir: Where trial folders and the default storage go.
        device: Where runs train (recorded on each trial).

    """

    name: str
    runs_dir: Path
    device: Any

    @property
    def spaces(self) -> Mapping[str, Hyperparameters]:
        """The search spaces, by target (``model``, ``optimizer``, ...)."""

    def metric_names(self) -> list[str]:
        """Return the metrics a run records every epoch (``val/loss``, ...)."""

    def check(self) -> None:
        """Raise a ``ConfigError`` listing every problem of the configuration."""

    def build(
        self,
        values: Mapping[str, Mapping[str, Any]],
        *,
        epochs: int,
        seed: int | None,
        with_test: bool,
    ) -> Run:
        """Build a fresh run (model, optimizer, batches) from one set of values."""

    def fit(self, run: Run, callbacks: Sequence[Callback]) -> FitState:
        """Train ``run`` with ``callbacks``."""

    def pass_batch(self, batch: Any) -> Any:
        """Run one batch through the model of the run last fitted (timed for latency)."""

    def worker_factory(self) -> Callable[[], SearchTask]:
        """Return a picklable callable that rebuilds this task in a worker process."""
