"""Measures of a trained model beside its metrics: its size and how fast it predicts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hpo_trainer.train.loop import autocast


def param_count(model: nn.Module) -> int:
    """Return the number of parameters of ``model`` (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def forward_latency_ms(
    model: nn.Module,
    pass_batch: Callable[[Any], Any],
    batch: Any,
    *,
    device: torch.device,
    amp: str | None = None,
    repeats: int = 10,
) -> float:
    """Return the median time of one forward pass of ``batch``, in milliseconds.

    The model is put in eval mode and run without gradients, as for validation; one
    untimed pass first warms caches and kernels. On CUDA each pass is synchronised, so the
    time is the device's, not the launch's.

    Args:
        model: The trained model (on ``device``).
        pass_batch: The forward pass (a batch in), as the training loop calls it.
        batch: One batch, as the loop's batches yield it.
        device: Where the model runs.
        amp: Mixed precision, as in the run (``'bf16'``, ``'fp16'`` or ``None``).
        repeats: Timed passes; the median is returned.

    Returns:
        The median of ``repeats`` timed passes.

    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.no_grad(), autocast(device, amp):
            pass_batch(batch)
            for _ in range(repeats):
                sync()
                start = time.perf_counter()
                pass_batch(batch)
                sync()
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return statistics.median(times) * 1000.0
