"""Worker processes: spawning them, their environment (threads, GPU), and their signals.

Each local worker is a spawned process running :func:`hpo_trainer.search.worker.run_worker`
on the shared study. It rebuilds the task with the task's own worker factory (a study file
is imported again; a trainer made in a script is unpickled), uses ``cores // workers``
torch threads, and sees only its GPU through ``CUDA_VISIBLE_DEVICES``. SIGINT and SIGTERM
sent to the parent are passed on to every worker, which stops at the next batch boundary
(see :mod:`hpo_trainer.train.interrupt`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from hpo_trainer.base.errors import Interrupted
from hpo_trainer.search.config import SearchConfig
from hpo_trainer.search.early import (
    EarlyWorkers,
    reap,
    scoped_environ,
    sigint_ignored,
    threads_env,
)
from hpo_trainer.search.mainguard import check_main_guard
from hpo_trainer.search.task import SearchTask
from hpo_trainer.search.workerproc import worker_main
from hpo_trainer.train.devices import visible_gpus

logger = logging.getLogger(__name__)

#: Seconds workers get to stop at their next batch after the parent failed, before they are
#: killed.
_STOP_GRACE = 30.0


def worker_env(worker: int, n_workers: int, devices: list[str] | None = None) -> dict[str, str]:
    """Return the environment a worker process gets: its torch threads and its GPU.

    Args:
        worker: The worker's index.
        n_workers: How many workers share the machine.
        devices: GPU ids to spread workers over (default: the visible GPUs).

    """
    env = threads_env(n_workers)
    devices = visible_gpus() if devices is None else devices
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = devices[worker % len(devices)]
    return env


def _send(procs: list[Any], signum: int) -> None:
    """Send ``signum`` to every worker still alive."""
    if signum == signal.SIGINT and sys.platform == "win32":
        return  # Windows delivers Ctrl-C to every process of the console already
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signum)


def _join(procs: list[Any], received: list[int]) -> None:
    """Wait for every worker; once a signal arrived, pass it on again every half second to
    those still alive (a worker that was starting up had it ignored).
    """
    while any(proc.is_alive() for proc in procs):
        for proc in procs:
            proc.join(timeout=0.5 / len(procs))
        if received:
            _send(procs, received[0])


@contextlib.contextmanager
def _forwarding_signals(procs: list[Any], received: list[int]) -> Iterator[None]:
    """Pass SIGINT and SIGTERM on to ``procs`` in the block (noting each in ``received``),
    then restore the handlers that were there, on every path.
    """

    def forward(signum: int, _frame: Any) -> None:
        # Pass the signal on: each worker stops at its next batch and checkpoints.
        received.append(signum)
        _send(procs, signum)

    previous: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, forward)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _owned(procs: list[Any]) -> Iterator[None]:
    """Own the worker processes in ``procs``: if the block raises, stop them (SIGTERM: each
    stops at its next batch boundary and checkpoints), then kill those that do not exit.

    Without this, a worker started before the failure would run on unwatched, and the
    interpreter's exit would wait for it to finish the whole budget.
    """
    try:
        yield
    except BaseException:
        _send(procs, signal.SIGTERM)
        reap(procs, grace=_STOP_GRACE)
        raise


def _start(
    ctx: Any,
    factory: Callable[[], SearchTask],
    cfg: SearchConfig,
    worker: int,
    devices: list[str] | None,
) -> Any:
    """Start worker ``worker`` with its environment and SIGINT ignored until it installs
    its own handler (the parent passes the signal on until then, see :func:`_join`);
    neither change outlives the start.
    """
    proc = ctx.Process(target=worker_main, args=(factory, cfg, worker), name=f"worker-{worker}")
    with scoped_environ(worker_env(worker, cfg.placement.n_workers, devices)), sigint_ignored():
        proc.start()
    return proc


def run_workers(
    task: SearchTask, cfg: SearchConfig, early: EarlyWorkers | None = None
) -> list[int]:
    """Start ``cfg.placement.n_workers`` spawned worker processes on the study and wait for them.

    Workers started ``early`` are handed the configuration instead when they fit it (as
    many, no GPU); otherwise they are cancelled and new ones spawned.

    SIGINT and SIGTERM are passed on to every worker; each stops at its next batch
    boundary, leaves its trial to be retried, and exits with 128 + the signal number. The
    parent's signal handlers and environment are as before once this returns or raises, and
    if it raises, the workers it started are stopped.

    Returns:
        The workers' exit codes (0 for a worker that finished; the caller decides what a
        non-zero code means for the search).

    Raises:
        Interrupted: If a signal stopped the workers.
        ConfigError: If the task cannot be sent to worker processes.

    """
    factory = task.worker_factory()
    n_workers = cfg.placement.n_workers
    if len(early.procs if early is not None else ()) < n_workers:  # some will be spawned now
        check_main_guard(n_workers)
    devices = list(cfg.placement.slots) if cfg.placement.slots is not None else None
    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    received: list[int] = []
    with _forwarding_signals(procs, received), _owned(procs):
        if early is not None:
            gpus = visible_gpus() if devices is None else devices
            if len(early.procs) == n_workers and not gpus:
                procs.extend(early.hand_over(cfg))
            else:
                early.cancel()
        for i in range(len(procs), n_workers):
            if received:
                break
            procs.append(_start(ctx, factory, cfg, i, devices))
        _join(procs, received)
    codes = [p.exitcode if p.exitcode is not None else -1 for p in procs]
    if received:
        raise Interrupted(
            received[0],
            f"stopped by {signal.Signals(received[0]).name}; running trials will be retried "
            "from their last checkpoints when the search runs again",
        )
    return codes
