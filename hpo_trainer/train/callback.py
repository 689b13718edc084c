"""The callback base: no-op hooks around the loop, each given the run's one state.

Stateful callbacks (early stopping, ...) return their state from :meth:`Callback.state_dict`;
it is saved in every checkpoint and handed back on resume, so that a resumed run behaves
exactly like an uninterrupted one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpo_trainer.train.state import FitState


class Callback:
    """Base class: override the hooks you need; the rest do nothing."""

    def on_fit_start(self, state: FitState) -> None:
        """Before the first epoch (also when resuming)."""

    def on_epoch_start(self, state: FitState) -> None:
        """Before each training epoch."""

    def on_batch_end(self, state: FitState) -> None:
        """After each training batch (only called if overridden, to keep the loop fast)."""

    def on_epoch_end(self, state: FitState) -> None:
        """After each epoch, once ``state.metrics`` and ``state.history`` hold it."""

    def on_fit_end(self, state: FitState) -> None:
        """After the last epoch, or after an early stop."""

    def state_dict(self) -> dict[str, Any]:
        """Return what this callback must remember across a resume (empty if nothing)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
