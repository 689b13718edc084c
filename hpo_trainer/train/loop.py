"""The training loop: ``fit``, one training epoch, evaluation, and the state callbacks see.

This module knows PyTorch and nothing of Optuna: pruning, checkpoints, TensorBoard and
progress all enter as callbacks (:mod:`hpo_trainer.train.callbacks`). The same :func:`fit` runs a
search trial and the final training run.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hpo_trainer.base.errors import ConfigError, NonFiniteLossError, is_real
from hpo_trainer.train.callback import Callback, in_call_order, load_callback_states
from hpo_trainer.train.state import FitState

logger = logging.getLogger(__name__)

PassBatch = Callable[[Any], Any]
MetricFn = Callable[[torch.Tensor, torch.Tensor], Any]


@dataclass
class _Totals:
    """Running sums over one pass through a dataset, kept as tensors to avoid syncs."""

    n: int = 0
    loss: Any = 0.0
    correct: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, out: Mapping[str, Any], size: int, metric_fns: Mapping[str, MetricFn]) -> None:
        self.n += size
        self.loss = self.loss + out["loss"].detach() * size
        preds, target = out.get("preds"), out.get("target")
        if _is_classification(preds, target):
            hits = (preds.detach().argmax(dim=1) == target).sum()
            self.correct = hits if self.correct is None else self.correct + hits
        for name, value in out.items():
            if name not in ("loss", "preds", "target") and _is_scalar(value):
                self.extra[name] = self.extra.get(name, 0.0) + _detach(value) * size
        if metric_fns and preds is not None:
            for name, fn in metric_fns.items():
                self.extra[name] = self.extra.get(name, 0.0) + _detach(fn(preds, target)) * size

    def means(self, split: str) -> dict[str, float]:
        if self.n == 0:
            return {}
        out = {f"{split}/loss": float(self.loss) / self.n}
        if self.correct is not None:
            out[f"{split}/acc"] = float(self.correct) / self.n
        for name, total in self.extra.items():
            out[f"{split}/{name}"] = float(total) / self.n
        return out


def _is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    return is_real(value)


def _detach(value: Any) -> Any:
    return value.detach().float() if isinstance(value, torch.Tensor) else float(value)


def _is_classification(preds: Any, target: Any) -> bool:
    return (
        isinstance(preds, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and preds.ndim == 2
        and target.ndim == 1
        and not target.is_floating_point()
        and len(preds) == len(target)
    )


def _size(out: Mapping[str, Any], batch: Any) -> int:
    for key in ("preds", "target"):
        value = out.get(key)
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return len(value)
    first = next(iter(batch.values())) if isinstance(batch, Mapping) else batch[0]
    return len(first)


def _check_output(out: Any) -> Mapping[str, Any]:
    """Check what ``pass_batch`` returned: a ``'loss'`` tensor, and preds that fit the target.

    Raises:
        ConfigError: If there is no ``'loss'`` tensor, or float preds and target broadcast
            to a shape that is neither of theirs (see :func:`_check_shapes`).

    """
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        return {"loss": out}
    if not isinstance(out, Mapping) or not isinstance(out.get("loss"), torch.Tensor):
        got = sorted(out) if isinstance(out, Mapping) else type(out).__name__
        raise ConfigError(
            "pass_batch must return a dict with a 'loss' tensor (and optionally 'preds' and "
            f"'target' for accuracy), got {got}; return {{'loss': loss, 'preds': preds, "
            "'target': y}"
        )
    _check_shapes(out.get("preds"), out.get("target"))
    return out


def _check_shapes(preds: Any, target: Any) -> None:
    """Refuse float preds and target that broadcast to a shape that is neither of theirs.

    A regression target shaped ``(N,)`` against outputs ``(N, 1)`` broadcasts to ``(N, N)``:
    the loss compares every prediction with every target, and trains (with only a warning
    from PyTorch) to a meaningless value. Class targets (integers) are not checked.

    Raises:
        ConfigError: If the two shapes broadcast to a third one.

    """
    if not (isinstance(preds, torch.Tensor) and isinstance(target, torch.Tensor)):
        return
    if not (preds.is_floating_point() and target.is_floating_point()):
        return
    if preds.shape == target.shape:
        return
    try:
        both = torch.broadcast_shapes(preds.shape, target.shape)
    except RuntimeError:
        return  # not broadcastable: the loss itself has already said so
    if both in (preds.shape, target.shape):
        return
    if target.ndim < preds.ndim:
        fix = (
            "give targets shaped like the outputs, (N, 1) for one output per example "
            "(y.unsqueeze(1) or y.reshape(-1, 1) in the dataset or in pass_batch), or "
            "squeeze the model's output (return out.squeeze(1) from forward)"
        )
    else:
        fix = (
            "give targets shaped like the outputs (y.squeeze(1) or y.reshape(-1) for one "
            "value per example), or shape the model's output like the targets "
            "(out.unsqueeze(1))"
        )
    raise ConfigError(
        f"the model's outputs have shape {tuple(preds.shape)} but the targets have shape "
        f"{tuple(target.shape)}: broadcasting them gives {tuple(both)}, so the loss compares "
        f"every output with every target and trains to a meaningless value. Outputs and "
        f"targets must have the same shape: {fix}"
    )


def autocast(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    """Return the mixed-precision context for ``amp`` (``'bf16'``, ``'fp16'`` or ``None``)."""
    if amp is None:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_epoch(
    state: FitState,
    batches: Iterable[Any],
    pass_batch: PassBatch,
    *,
    amp: str | None = None,
    grad_clip: float | None = None,
    on_batch_end: Sequence[Callback] = (),
) -> dict[str, float]:
    """Train ``state.model`` for one pass over ``batches``.

    Returns:
        The epoch's mean training metrics (``train/loss``, ``train/acc`` ...).

    """
    model, optimizer, scaler = state.model, state.optimizer, state.scaler
    model.train()
    totals = _Totals()
    state.batch = 0
    checked = False
    for batch in batches:
        with autocast(state.device, amp):
            out = pass_batch(batch)
        if not checked:
            out = _check_output(out)
            checked = True
        loss = out["loss"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        totals.add(out, _size(out, batch), {})
        state.batch += 1
        for cb in on_batch_end:
            cb.on_batch_end(state)
        if state.interrupted or state.halted:
            break
    return totals.means("train")


def evaluate(
    model: nn.Module,
    batches: Iterable[Any],
    pass_batch: PassBatch,
    *,
    split: str,
    device: torch.device,
    amp: str | None = None,
    metric_fns: Mapping[str, MetricFn] | None = None,
) -> dict[str, float]:
    """Return the mean metrics of ``model`` over ``batches`` under the ``split`` namespace."""
    model.eval()
    totals = _Totals()
    with torch.no_grad(), autocast(device, amp):
        for batch in batches:
            out = _check_output(pass_batch(batch))
            totals.add(out, _size(out, batch), metric_fns or {})
    return totals.means(split)


def _end_epoch(state: FitState, metrics: dict[str, float]) -> None:
    """Check the losses, step the scheduler and record the epoch in ``state``.

    Raises:
        NonFiniteLossError: If a loss is NaN or infinite.

    """
    bad = {k: v for k, v in metrics.items() if k.endswith("/loss") and not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(
            f"the loss became non-finite in epoch {state.epoch + 1} ({bad}); lower the "
            "learning rate, clip gradients (grad_clip=1.0) or check the data for NaNs"
        )
    if state.scheduler is not None:
        if isinstance(state.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            state.scheduler.step(metrics.get("val/loss", metrics["train/loss"]))
        else:
            state.scheduler.step()
    metrics["train/lr"] = float(state.optimizer.param_groups[0]["lr"])
    state.epoch += 1
    state.metrics = metrics
    state.history.append(metrics)


def _overrides(cb: Callback, hook: str) -> bool:
    return getattr(type(cb), hook) is not getattr(Callback, hook)


def fit(
    state: FitState,
    *,
    train_batches: Iterable[Any],
    pass_batch: PassBatch,
    val_batches: Iterable[Any] | None = None,
    test_batches: Iterable[Any] | None = None,
    callbacks: Sequence[Callback] = (),
    amp: str | None = None,
    grad_clip: float | None = None,
    metric_fns: Mapping[str, MetricFn] | None = None,
) -> FitState:
    """Train ``state.model`` from epoch ``state.epoch`` up to ``state.epochs``.

    Every epoch: train, evaluate on the validation (and test) set, step the scheduler,
    append the metrics to ``state.history``, then call each callback's ``on_epoch_end``
    (where pruning, checkpoints and TensorBoard happen). Once the fit is over, on every
    path (an exception or Ctrl-C included), each callback's ``close`` releases what it
    holds open: the TensorBoard writer, the progress bar, the checkpoint writer thread.

    Args:
        state: The run's state; resuming means passing a state restored from a checkpoint.
        train_batches: Batches to train on (reshuffled every epoch by the iterable).
        pass_batch: The forward pass: a batch in, ``{'loss', 'preds', 'target'}`` out.
        val_batches: Batches to validate on.
        test_batches: Batches to test on every epoch.
        callbacks: Hooks, called in order (those with ``runs_last``, such as checkpoints,
            after the others). States restored from a checkpoint
            (``state.callback_states``) are loaded into them before ``on_fit_start``.
        amp: Mixed precision: ``'bf16'``, ``'fp16'`` or ``None``.
        grad_clip: Clip the gradient norm to this, if given.
        metric_fns: Extra evaluation metrics: name -> ``fn(preds, target)``.

    Returns:
        ``state``, after the last epoch.

    Raises:
        NonFiniteLossError: If the training or validation loss becomes NaN or infinite.

    """
    callbacks = in_call_order(callbacks)
    state.callbacks = callbacks
    if state.callback_states:
        load_callback_states(callbacks, state.callback_states)
        state.callback_states = {}
    batch_hooks = [cb for cb in callbacks if _overrides(cb, "on_batch_end")]
    try:
        state.batches = len(train_batches)  # type: ignore[arg-type]
    except TypeError:
        state.batches = 0
    try:
        for cb in callbacks:
            cb.on_fit_start(state)
        while state.epoch < state.epochs and not (state.stop or state.interrupted or state.halted):
            for cb in callbacks:
                cb.on_epoch_start(state)
            metrics = train_epoch(
                state,
                train_batches,
                pass_batch,
                amp=amp,
                grad_clip=grad_clip,
                on_batch_end=batch_hooks,
            )
            if state.interrupted or state.halted:
                # Stopped mid-epoch: the epoch does not count and nothing of it is recorded.
                break
            for split, batches in (("val", val_batches), ("test", test_batches)):
                if batches is not None:
                    metrics.update(
                        evaluate(
                            state.model,
                            batches,
                            pass_batch,
                            split=split,
                            device=state.device,
                            amp=amp,
                            metric_fns=metric_fns,
                        )
                    )
            _end_epoch(state, metrics)
            for cb in callbacks:
                cb.on_epoch_end(state)
        for cb in callbacks:
            cb.on_fit_end(state)
    except BaseException:
        _close(callbacks, state, failed=True)
        raise
    _close(callbacks, state, failed=False)
    return state


def _close(callbacks: Sequence[Callback], state: FitState, *, failed: bool) -> None:
    """Call every callback's ``close``, each one even if another raises.

    After a fit that raised (``failed``), an error in ``close`` is logged and the fit's own
    error goes on (a pruned trial stays pruned); otherwise the first one is raised once
    every callback is closed.
    """
    first: Exception | None = None
    for cb in callbacks:
        try:
            cb.close(state)
        except Exception as exc:
            if failed:
                logger.warning(
                    "%s could not close after the fit failed: %s", type(cb).__name__, exc
                )
            elif first is None:
                first = exc
    if first is not None:
        raise first
