"""Stopping cleanly on SIGINT / SIGTERM: finish the current batch, keep the checkpoint.

While :func:`stop_on_signals` is active, a signal sets a flag instead of raising
``KeyboardInterrupt`` in the middle of a PyTorch call. The training loop sees the flag at
the next batch boundary (``FitState.interrupted``) and returns; the search then leaves the
trial to be retried from its last checkpoint and raises :class:`Interrupted`.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpo_trainer.train.state import FitState

logger = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """The signal received (if any) and the run to stop."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.state: FitState | None = None

    def set(self, signum: int) -> None:
        """Record ``signum`` and ask the running loop to stop at the next batch."""
        if self.signum is None:
            logger.warning(
                "%s received: stopping at the next batch boundary", signal.Signals(signum).name
            )
        self.signum = signum
        if self.state is not None:
            self.state.interrupted = True


#: The flag of this process.
FLAG = StopFlag()


def clear() -> None:
    """Forget a signal received earlier, so that a new search in this process starts afresh.

    In a notebook, a search stopped with Ctrl-C must not stop the next one at once.
    """
    FLAG.signum = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Turn SIGINT and SIGTERM into :data:`FLAG` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield FLAG
        return
    previous: dict[int, Any] = {}
    for sig in _SIGNALS:
        previous[sig] = signal.signal(sig, lambda signum, _frame: FLAG.set(signum))
    try:
        yield FLAG
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
