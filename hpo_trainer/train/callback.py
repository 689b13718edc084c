"""The callback base: no-op hooks around the loop, each given the run's one state.

Stateful callbacks (early stopping, ...) return their state from :meth:`Callback.state_dict`;
it is saved in every checkpoint and handed back on resume, so that a resumed run behaves
exactly like an uninterrupted one. States are keyed by class name and position among the
callbacks of that class (``EarlyStopping:0``), so each goes back to the callback it came from.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from hpo_trainer.base.errors import ConfigError

if TYPE_CHECKING:
    from hpo_trainer.train.state import FitState

logger = logging.getLogger(__name__)


class Callback:
    """Base class: override the hooks you need; the rest do nothing.

    Attributes:
        runs_last: Call this callback's hooks after every other callback's (checkpoints set
            it, so that they capture the state all other callbacks reached in an epoch).

    """

    runs_last: ClassVar[bool] = False

    def on_fit_start(self, state: FitState) -> None:
        """Before the first epoch (also when resuming, after :meth:`load_state_dict`)."""

    def on_epoch_start(self, state: FitState) -> None:
        """Before each training epoch."""

    def on_batch_end(self, state: FitState) -> None:
        """After each training batch (only called if overridden, to keep the loop fast)."""

    def on_epoch_end(self, state: FitState) -> None:
        """After each epoch, once ``state.metrics`` and ``state.history`` hold it."""

    def on_fit_end(self, state: FitState) -> None:
        """After the last epoch, or after an early stop (not when the fit raised)."""

    def close(self, state: FitState) -> None:
        """Release what this callback holds open (files, threads, progress bars).

        Called once the fit is over, on every path: after :meth:`on_fit_end` when the fit
        ends, instead of it when the fit raised (user code, a non-finite loss, Ctrl-C). It
        must therefore not do what only a fit that ended may, such as saving the weights,
        which may be part-way through an epoch. Closing twice must do nothing.
        """

    def state_dict(self) -> dict[str, Any]:
        """Return what this callback must remember across a resume (empty if nothing).

        Returns:
            Plain values only (numbers, strings, lists, dicts, tensors): a checkpoint is
            loaded with ``weights_only=True``.

        """
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def in_call_order(callbacks: Sequence[Callback]) -> list[Callback]:
    """Return ``callbacks`` in the order the loop calls them: ``runs_last`` ones at the end."""
    return [cb for cb in callbacks if not cb.runs_last] + [cb for cb in callbacks if cb.runs_last]


def _keyed(callbacks: Sequence[Callback]) -> dict[str, Callback]:
    """Key each callback by its class name and its position among callbacks of that class."""
    seen: dict[str, int] = {}
    keyed = {}
    for cb in callbacks:
        name = type(cb).__qualname__
        keyed[f"{name}:{seen.get(name, 0)}"] = cb
        seen[name] = seen.get(name, 0) + 1
    return keyed


def _not_plain(value: Any, where: str) -> str | None:
    """Return where ``value`` holds something a safe checkpoint load refuses, or ``None``."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return None
    if isinstance(value, (list, tuple)):
        items: Iterable[tuple[Any, Any]] = enumerate(value)
    elif isinstance(value, dict):
        items = value.items()
    else:
        return f"{where}: {type(value).__module__}.{type(value).__qualname__}"
    for key, item in items:
        found = _not_plain(item, f"{where}[{key!r}]")
        if found is not None:
            return found
    return None


def callback_states(callbacks: Sequence[Callback]) -> dict[str, dict[str, Any]]:
    """Return the non-empty states of ``callbacks``, keyed as described in the module.

    Raises:
        ConfigError: If a state holds anything but numbers, strings, lists, dicts and
            tensors (a checkpoint holding it could not be loaded safely).

    """
    states = {key: cb.state_dict() for key, cb in _keyed(callbacks).items()}
    for key, state in states.items():
        found = _not_plain(state, "state_dict()")
        if found is not None:
            raise ConfigError(
                f"callback {key}'s state must hold only numbers, strings, None, lists, dicts "
                f"and tensors (checkpoints load with weights_only=True), but {found} is not; "
                "convert it, e.g. with float(...) or .tolist()"
            )
    return {key: state for key, state in states.items() if state}


def load_callback_states(
    callbacks: Sequence[Callback], states: Mapping[str, Mapping[str, Any]]
) -> None:
    """Hand each saved state in ``states`` back to the callback it was taken from.

    A state whose callback is not in this run (resumed without it) is left unused, with a
    warning; a callback with no saved state keeps its own.
    """
    keyed = _keyed(callbacks)
    for key, state in states.items():
        cb = keyed.get(key)
        if cb is None:
            logger.warning(
                "the checkpoint holds the state of callback %s, which this run does not "
                "have; it is not used",
                key,
            )
            continue
        cb.load_state_dict(dict(state))
