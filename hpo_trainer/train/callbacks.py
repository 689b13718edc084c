"""The stock callbacks: checkpoints, TensorBoard, progress, early stopping and time limits.

Each hook gets the one :class:`~hpo_trainer.train.state.FitState`. A callback ends a run by
setting ``state.stop``. Pruning is a callback too, on the search side
(:class:`hpo_trainer.search.pruning.PruningCallback`).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_trainer.base.errors import ConfigError, is_int, is_real, raise_all
from hpo_trainer.train import checkpoint
from hpo_trainer.train.callback import Callback

if TYPE_CHECKING:
    from hpo_trainer.train.state import FitState

logger = logging.getLogger(__name__)


class CheckpointCallback(Callback):
    """Save a checkpoint every ``every`` epochs and after the last epoch.

    It runs after the other callbacks (``runs_last``), so a checkpoint holds the state
    every callback reached in that epoch, an early stop included.

    Args:
        directory: Where checkpoints go.
        every: Save after every this many epochs.
        filename: The file name; ``{epoch}`` is filled in (``"last.pt"`` keeps one file).
        extra: Called with the state; its dict is added to each checkpoint.
        durable: Flush each checkpoint to the disk (see :func:`hpo_trainer.checkpoint.save`).
        background: Serialize and write each checkpoint in a background thread, from a copy
            of the state taken at the epoch's end, so training goes on meanwhile. At most one
            write is in flight (the next save waits for it), so a process killed at any
            moment has the previous epoch's checkpoint at least; call :meth:`flush` (done at
            the end of a fit) before reading the file.

    """

    runs_last = True

    def __init__(
        self,
        directory: str | Path,
        *,
        every: int = 1,
        filename: str = "epoch-{epoch:04d}.pt",
        extra: Callable[[FitState], Mapping[str, Any]] | None = None,
        durable: bool = True,
        background: bool = False,
    ) -> None:
        self.durable = durable
        self.background = background
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future[Path] | None = None
        self.directory = Path(directory)
        self.every = every
        self.filename = filename
        self.extra = extra
        self.last_path: Path | None = None
        self._saved = -1
        self._mid_epoch = False

    def on_fit_start(self, state: FitState) -> None:
        """Start at the end of a completed epoch (0, or the one resumed from)."""
        self._mid_epoch = False

    def on_epoch_start(self, state: FitState) -> None:
        """Note that the weights now move past the last completed epoch."""
        self._mid_epoch = True

    def on_epoch_end(self, state: FitState) -> None:
        """Save when the epoch is due."""
        self._mid_epoch = False
        if state.epoch % self.every == 0 or state.epoch >= state.epochs or state.stop:
            self.save(state)

    def close(self, state: FitState) -> None:
        """Wait for a checkpoint still being written and stop the writer thread (no save:
        after a fit that raised, the weights may be part-way through an epoch).
        """
        self.flush()

    def on_fit_end(self, state: FitState) -> None:
        """Save the last completed epoch if the run stopped before it was due.

        A run interrupted part-way through an epoch is not saved: its weights are no longer
        those of the last completed epoch, so a resume from them would not repeat the run.
        """
        if self._mid_epoch:
            logger.info(
                "not saving a checkpoint: stopped part-way through epoch %d", state.epoch + 1
            )
        elif state.epoch > 0 and self._saved != state.epoch:
            self.save(state)
        self.flush()

    def save(self, state: FitState) -> Path:
        """Save a checkpoint of ``state`` (in the background if asked) and return its path."""
        ckpt = checkpoint.capture(state)
        if self.extra is not None:
            ckpt.update(self.extra(state))
        path = self.directory / self.filename.format(epoch=state.epoch)
        if self.background:
            snapshot = checkpoint.snapshot(ckpt)  # training changes the tensors in place
            self._wait()
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
            self._pending = self._writer.submit(
                checkpoint.save, snapshot, path, durable=self.durable
            )
        else:
            self.last_path = checkpoint.save(ckpt, path, durable=self.durable)
        self._saved = state.epoch
        return path

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self.last_path = pending.result()

    def flush(self) -> None:
        """Wait for the checkpoint being written in the background, if any, and stop the
        writer thread.

        Raises:
            OSError: If that write failed.

        """
        try:
            self._wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None


def _hparam_value(value: Any) -> int | float | str | bool:
    if isinstance(value, (bool, int, float, str)):
        return value
    name = getattr(value, "__name__", None)
    return name if isinstance(name, str) else str(value)


class TensorBoardCallback(Callback):
    """Write every metric as a scalar every ``every`` epochs, and hparams at the end.

    Args:
        logdir: The run's TensorBoard folder.
        every: Write scalars after every this many epochs.
        hparams: The hyperparameters to record with the final metrics.

    """

    def __init__(
        self, logdir: str | Path, *, every: int = 1, hparams: Mapping[str, Any] | None = None
    ) -> None:
        self.logdir = Path(logdir)
        self.every = max(1, every)
        self.hparams = dict(hparams or {})
        self._writer: Any = None
        self._written: int = -1

    def on_fit_start(self, state: FitState) -> None:
        """Open the event file."""
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(self.logdir))

    def on_epoch_end(self, state: FitState) -> None:
        """Write scalars when the epoch is due."""
        if state.epoch % self.every == 0:
            self._write_scalars(state)

    def state_dict(self) -> dict[str, Any]:
        """Return the last epoch written, so a resume does not write it twice."""
        return {"written": self._written}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the last epoch written."""
        self._written = int(state.get("written", -1))

    def _write_scalars(self, state: FitState) -> None:
        for name, value in state.metrics.items():
            self._writer.add_scalar(name, value, state.epoch)
        self._written = state.epoch

    def on_fit_end(self, state: FitState) -> None:
        """Write the last scalars if they are not yet written, then the hparams, and close
        the event file.
        """
        from torch.utils.tensorboard.summary import hparams

        if self._writer is None:
            return
        try:
            if state.metrics and self._written != state.epoch:
                self._write_scalars(state)
            final = {k: v for k, v in state.metrics.items() if math.isfinite(v)}
            if self.hparams and final:
                values = {k: _hparam_value(v) for k, v in self.hparams.items()}
                for summary in hparams(values, final):
                    self._writer.file_writer.add_summary(summary)
        finally:
            self._writer.close()
            self._writer = None

    def close(self, state: FitState) -> None:
        """Finish the event file as :meth:`on_fit_end` does, if that has not happened: a
        fit that raised keeps the epochs it completed (``state.metrics`` holds only
        those), with the hparams, as a pruned trial does.
        """
        self.on_fit_end(state)


class ProgressCallback(Callback):
    """A progress bar over each epoch's batches, on a terminal only.

    Args:
        enabled: Show it; by default only when standard error is a terminal.

    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar: Any = None

    def on_epoch_start(self, state: FitState) -> None:
        """Open this epoch's bar."""
        if self.enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=state.batches or None,
                desc=f"epoch {state.epoch + 1}/{state.epochs}",
                leave=False,
                unit="batch",
                dynamic_ncols=True,
            )

    def on_batch_end(self, state: FitState) -> None:
        """Advance the bar."""
        if self._bar is not None:
            self._bar.update(1)

    def on_epoch_end(self, state: FitState) -> None:
        """Close the bar and log the epoch's metrics."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            shown = ", ".join(
                f"{k} {v:.4g}" for k, v in state.metrics.items() if not k.endswith("/lr")
            )
            logger.info("epoch %d/%d: %s", state.epoch, state.epochs, shown)

    def close(self, state: FitState) -> None:
        """Close a bar left open by an interrupted or failed epoch."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class EarlyStopping(Callback):
    """Stop when ``metric`` has not improved by ``min_delta`` for ``patience`` epochs.

    Its count survives a resume: the best value and the epochs without improvement are
    saved in every checkpoint (:meth:`state_dict`), so a resumed run stops at the same
    epoch as an uninterrupted one. A fresh run (from epoch 0) starts the count over.

    Args:
        metric: The metric to watch.
        patience: Epochs without improvement to allow.
        mode: ``"min"`` or ``"max"``.
        min_delta: The smallest change that counts as an improvement.

    Raises:
        ConfigError: If ``mode``, ``patience`` or ``min_delta`` is not valid.

    """

    def __init__(
        self,
        metric: str = "val/loss",
        *,
        patience: int = 5,
        mode: str = "min",
        min_delta: float = 0.0,
    ) -> None:
        problems = []
        if mode not in ("min", "max"):
            problems.append(f"mode must be 'min' or 'max', got {mode!r}")
        if not is_int(patience, 1):
            problems.append(f"patience must be an integer >= 1, got {patience!r}")
        if not (is_real(min_delta) and min_delta >= 0):
            problems.append(f"min_delta must be a number >= 0, got {min_delta!r}")
        raise_all(problems, ConfigError)
        self.metric, self.patience, self.mode, self.min_delta = metric, patience, mode, min_delta
        self.best: float | None = None
        self.bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        """Return the best value so far and the epochs since it."""
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the best value and the epochs since it."""
        best = state.get("best")
        self.best = None if best is None else float(best)
        self.bad_epochs = int(state.get("bad_epochs", 0))

    def on_fit_start(self, state: FitState) -> None:
        """Start the count over for a fresh run; a resumed run that had stopped stays stopped."""
        if state.epoch == 0:
            self.best, self.bad_epochs = None, 0
        elif self.bad_epochs >= self.patience:
            state.stop = True
            state.stop_reason = self._reason()

    def on_epoch_end(self, state: FitState) -> None:
        """Count epochs without improvement; stop after ``patience`` of them."""
        value = state.metrics[self.metric]
        better = self.best is None or (
            value < self.best - self.min_delta
            if self.mode == "min"
            else value > self.best + self.min_delta
        )
        if better:
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            state.stop = True
            state.stop_reason = self._reason()

    def _reason(self) -> str:
        return f"early stop: {self.metric} did not improve for {self.patience} epochs"


class TimeLimit(Callback):
    """End a run that has trained for ``seconds``, at the next batch boundary.

    It sets ``state.halted`` (not ``state.interrupted``: a time limit is no signal, and the
    run is not retried), so the loop stops after the current batch and the unfinished epoch
    is not recorded. A limit passed during evaluation stops the run after that epoch. The
    time spent survives a resume (:meth:`state_dict`), so a resumed run gets only the rest.

    Args:
        seconds: The limit, in seconds of wall time from the start of the fit.
        started: When the clock started (a :func:`time.perf_counter` value), if before the
            fit: a search trial counts from the trial's start, building the run included.

    Attributes:
        reason: Why the run was stopped (``"time limit of 2 s reached in epoch 3"``), or
            ``None`` while the limit has not been reached.

    """

    def __init__(self, seconds: float, *, started: float | None = None) -> None:
        self.seconds = float(seconds)
        self.reason: str | None = None
        self._before = 0.0
        self._given = started
        self._started = time.perf_counter() if started is None else started

    def elapsed(self) -> float:
        """Return the seconds trained so far, earlier attempts of a resumed run included."""
        return self._before + time.perf_counter() - self._started

    def state_dict(self) -> dict[str, Any]:
        """Return the seconds trained so far."""
        return {"elapsed": self.elapsed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the seconds trained before the resume."""
        self._before = float(state.get("elapsed", 0.0))

    def on_fit_start(self, state: FitState) -> None:
        """Start the clock."""
        self.reason = None
        self._started = time.perf_counter() if self._given is None else self._given
        if state.epoch == 0:
            self._before = 0.0

    def on_batch_end(self, state: FitState) -> None:
        """Halt after this batch once the limit has passed."""
        if self.elapsed() >= self.seconds:
            self.reason = f"time limit of {self.seconds:g} s reached in epoch {state.epoch + 1}"
            state.halted = True
            state.stop_reason = self.reason

    def on_epoch_end(self, state: FitState) -> None:
        """Stop after this epoch if the limit passed while evaluating it (not the last)."""
        if state.epoch < state.epochs and self.elapsed() >= self.seconds:
            self.reason = f"time limit of {self.seconds:g} s reached after epoch {state.epoch}"
            state.stop = True
            state.stop_reason = self.reason
