"""The state of one training run: its per-epoch history, the state callbacks see, and the
objects a run is built from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


class History(dict):
    """Per-epoch metrics under namespaced keys (``train/loss``, ``val/acc``, ...).

    The template's layout also works: ``history['loss']['val']`` is ``history['val/loss']``.
    """

    def __missing__(self, key: str) -> dict[str, list[float]]:
        group = {k.split("/", 1)[0]: v for k, v in self.items() if k.split("/", 1)[-1] == key}
        if not group:
            raise KeyError(key)
        return group

    def append(self, metrics: Mapping[str, float]) -> None:
        """Add one epoch's metrics."""
        for name, value in metrics.items():
            self.setdefault(name, []).append(value)

    def truncate(self, epochs: int) -> None:
        """Keep only the first ``epochs`` entries of every metric."""
        for name in self:
            del self[name][epochs:]


@dataclass
class FitState:
    """What the loop is doing, handed to every callback.

    Attributes:
        model: The model being trained.
        optimizer: Its optimizer.
        scheduler: Its learning-rate scheduler, if any.
        device: Where the model runs.
        epochs: The epoch the run stops after.
        epoch: Epochs completed so far (1 after the first epoch).
        batch: Batches completed in the current epoch.
        batches: Batches per training epoch.
        metrics: The last completed epoch's metrics.
        history: Every completed epoch's metrics.
        params: The hyperparameters of this run, as stored (labels for objects).
        stop: Set by a callback to end the run after the current epoch.
        interrupted: Set (by a signal handler) to end the run at the next batch boundary.
        halted: Set by a callback (a time limit) to end the run at the next batch boundary;
            unlike ``interrupted`` it is not a signal, so the run is not retried.
        stop_reason: Why the run stopped early, if it did.
        loader_generator: The generator that shuffles the training set.
        scaler: The gradient scaler of float16 mixed precision, if used.
        callbacks: The callbacks of the running fit, in call order (a checkpoint saves
            their states).
        callback_states: Callback states restored from a checkpoint, handed to the
            callbacks when the next fit starts.
        extra: Free space for callbacks.

    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    epochs: int = 1
    epoch: int = 0
    batch: int = 0
    batches: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    history: History = field(default_factory=History)
    params: dict[str, Any] = field(default_factory=dict)
    stop: bool = False
    interrupted: bool = False
    halted: bool = False
    stop_reason: str | None = None
    loader_generator: torch.Generator | None = None
    scaler: Any = None
    callbacks: list[Any] = field(default_factory=list)
    callback_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """Everything one training run needs, built fresh from one set of parameters.

    Attributes:
        state: The loop's state (model, optimizer, scheduler, epoch, history, ...).
        train_batches: Batches to train on.
        val_batches: Batches to validate on, if any.
        test_batches: Batches to test on every epoch, if any.
        amp: Mixed precision: ``'bf16'``, ``'fp16'`` or ``None``.
        criterion: The loss.

    """

    state: FitState
    train_batches: Any
    val_batches: Any
    test_batches: Any
    amp: str | None
    criterion: Any
