"""What a ``Trainer``'s calls built and found, kept apart from its configuration.

skorch keeps what ``fit`` made (``module_``) apart from what the user set (``module``); the
trainer does the same. Its configuration is what the constructor and the setters took;
everything a call sets lives in one :class:`TrainerState`, the trainer's ``state_`` (the
trailing underscore, as in skorch, marks "set by a call"). ``hyp_opt``, ``train``,
``initialize``, ``build`` and ``fit`` change ``state_`` and nothing else on the trainer, and
:class:`StateViews` gives read-only views of it (``tr.model``, ``tr.history``,
``tr.run_dir``, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hpo_trainer.base.errors import ConfigError
from hpo_trainer.train.state import History, Run


@dataclass
class TrainerState:
    """What a trainer's calls built and found (``None`` before the call that sets it).

    Attributes:
        last_run: The run built last (by ``initialize``, ``build``, a search trial run in
            this process, ``train``): its model, optimizer, scheduler, loss and history.
        best: The values of the last search's best trial (``{target: {name: value}}``),
            used by ``train`` and ``resolve_params`` when no params are given.
        best_trial: What made that trial: its study, trial, value, metric, direction,
            epochs, best epoch and seed (``train`` repeats them).
        run_dir: The folder of the last run written (``train``, ``final_run``).
        summary: That run's ``summary.json``.

    """

    last_run: Run | None = None
    best: dict[str, dict[str, Any]] | None = None
    best_trial: dict[str, Any] | None = None
    run_dir: Path | None = None
    summary: dict[str, Any] | None = None

    def without_run(self) -> TrainerState:
        """Return this state without the last run (what a pickled trainer carries)."""
        return dataclasses.replace(self, last_run=None)


class StateViews:
    """Read-only views of a trainer's :class:`TrainerState` (``None`` before the call)."""

    #: What the trainer's calls built and found.
    state_: TrainerState

    @property
    def last_run(self) -> Run | None:
        """The run built last (by ``initialize``, ``build``, a search trial or ``train``)."""
        return self.state_.last_run

    @property
    def run_dir(self) -> Path | None:
        """The folder of the last :meth:`~hpo_trainer.Trainer.train` run."""
        return self.state_.run_dir

    @property
    def summary(self) -> dict[str, Any] | None:
        """The ``summary.json`` of the last :meth:`~hpo_trainer.Trainer.train` run."""
        return self.state_.summary

    @property
    def model(self) -> nn.Module | None:
        """The model of the last run."""
        run = self.state_.last_run
        return run.state.model if run is not None else None

    @property
    def criterion(self) -> Any:
        """The loss of the last run."""
        run = self.state_.last_run
        return run.criterion if run is not None else None

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer of the last run."""
        run = self.state_.last_run
        return run.state.optimizer if run is not None else None

    @property
    def scheduler(self) -> Any:
        """The scheduler of the last run."""
        run = self.state_.last_run
        return run.state.scheduler if run is not None else None

    @property
    def history(self) -> History:
        """The per-epoch metrics of the last run (empty before any)."""
        run = self.state_.last_run
        return run.state.history if run is not None else History()

    def get_model(self) -> nn.Module:
        """Return the model of the last run.

        Raises:
            ConfigError: If nothing has been trained yet.

        """
        if self.model is None:
            raise ConfigError("no model has been trained yet; call train() first")
        return self.model
