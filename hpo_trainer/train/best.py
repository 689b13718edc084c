"""Keep the best epoch's weights: what a search trial's value describes is what a run ships.

A trial's value is its best epoch's value of the monitored metric, not its last. A run that
kept its last epoch would ship another model than the one that was measured, so
:class:`KeepBest` keeps a CPU copy of the weights of the best epoch so far, and
:meth:`KeepBest.restore` puts them back into the model when the run ends. Its state (the best
value, its epoch and those weights) is saved in every checkpoint, so a resumed run keeps the
same epoch as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from hpo_trainer.base.errors import ConfigError
from hpo_trainer.train import checkpoint
from hpo_trainer.train.callback import Callback

if TYPE_CHECKING:
    from hpo_trainer.train.state import FitState

logger = logging.getLogger(__name__)

#: The directions a metric may be optimised in, by the words accepted for them.
_MODES = {"min": "min", "minimize": "min", "max": "max", "maximize": "max"}


def is_better(value: float, best: float | None, mode: str) -> bool:
    """Return whether ``value`` beats ``best`` (``None``: nothing yet) in direction ``mode``.

    A value that is not finite never counts; ties keep the earlier epoch.
    """
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def best_epoch(series: Sequence[float], mode: str) -> int | None:
    """Return the best epoch (1-based) of a metric's per-epoch ``series``, by :func:`is_better`.

    The one rule for "the best epoch": a search trial's value, a multi-objective trial's
    values and the weights :class:`KeepBest` keeps all follow it. ``None`` when no value
    is finite.
    """
    mode = _MODES[mode]
    best, epoch = None, None
    for i, value in enumerate(series):
        if is_better(float(value), best, mode):
            best, epoch = float(value), i + 1
    return epoch


class KeepBest(Callback):
    """Keep the weights of the epoch with the best ``metric`` (copied to the CPU).

    Args:
        metric: The metric to watch (an epoch without it is skipped).
        mode: ``"min"`` or ``"max"`` (``"minimize"`` and ``"maximize"`` too).

    Attributes:
        best: The best value so far (``None`` before any).
        epoch: The epoch it was reached in (1-based; 0 before any).

    Raises:
        ConfigError: If ``mode`` is not one of the directions.

    """

    def __init__(self, metric: str = "val/loss", *, mode: str = "min") -> None:
        if mode not in _MODES:
            raise ConfigError(f"mode must be 'min' or 'max', got {mode!r}")
        self.metric, self.mode = metric, _MODES[mode]
        self.best: float | None = None
        self.epoch = 0
        self._weights: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        """Return the best value, its epoch and its weights."""
        return {"best": self.best, "epoch": self.epoch, "weights": self._weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the best value, its epoch and its weights."""
        best = state.get("best")
        self.best = None if best is None else float(best)
        self.epoch = int(state.get("epoch") or 0)
        self._weights = state.get("weights")

    def on_fit_start(self, state: FitState) -> None:
        """Start over for a fresh run (a resumed one keeps what its checkpoint held)."""
        if state.epoch == 0:
            self.best, self.epoch, self._weights = None, 0, None

    def on_epoch_end(self, state: FitState) -> None:
        """Copy the weights when this epoch beats the best so far."""
        value = state.metrics.get(self.metric)
        if value is None or not is_better(float(value), self.best, self.mode):
            return
        self.best, self.epoch = float(value), state.epoch
        self._weights = checkpoint.snapshot(state.model.state_dict())

    def restore(self, model: nn.Module) -> int | None:
        """Load the best epoch's weights into ``model``.

        Returns:
            The epoch restored, or ``None`` when no epoch had the metric (nothing changes).

        """
        if self._weights is None:
            return None
        model.load_state_dict(self._weights)
        return self.epoch
