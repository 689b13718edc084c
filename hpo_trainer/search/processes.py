"""Worker processes: spawning them, their environment (threads, GPU), and their signals.

Each local worker is a spawned process running :func:`hpo_trainer.search.worker.run_worker`
on the shared study. It rebuilds the task with the task's own worker factory (a study file
is imported again; a trainer made in a script is unpickled), uses ``cores // workers``
torch threads, and sees only its GPU through ``CUDA_VISIBLE_DEVICES``. SIGINT and SIGTERM
sent to the parent are passed on to every worker, which stops at the next batch boundary
(see :mod:`hpo_trainer.train.interrupt`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
from typing import Any

from hpo_trainer.errors import Interrupted
from hpo_trainer.search.config import SearchConfig
from hpo_trainer.search.early import EarlyWorkers, threads_env
from hpo_trainer.search.mainguard import check_main_guard
from hpo_trainer.search.task import SearchTask
from hpo_trainer.search.workerproc import worker_main
from hpo_trainer.train.devices import visible_gpus

logger = logging.getLogger(__name__)


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


def _start_ignoring_sigint(proc: Any, handler: Any) -> None:
    """Start ``proc`` with SIGINT ignored until it installs its own handler.

    A Ctrl-C at the terminal reaches every process of the group; a worker still importing
    torch would die of it with a long traceback. Ignored signals stay ignored across the
    child's exec, and the worker's own handler takes over once its loop starts (the parent
    keeps passing the signal on until then, see :func:`_join`).
    """
    if sys.platform == "win32":
        proc.start()
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc.start()
    finally:
        signal.signal(signal.SIGINT, handler)


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


def run_workers(
    task: SearchTask, cfg: SearchConfig, early: EarlyWorkers | None = None
) -> list[int]:
    """Start ``cfg.n_workers`` spawned worker processes on the study and wait for them.

    Workers started ``early`` are handed the configuration instead when they fit it (as
    many, no GPU); otherwise they are cancelled and new ones spawned.

    SIGINT and SIGTERM are passed on to every worker; each stops at its next batch
    boundary, leaves its trial to be retried, and exits with 128 + the signal number.

    Returns:
        The workers' exit codes (0 for a worker that finished; the caller decides what a
        non-zero code means for the search).

    Raises:
        Interrupted: If a signal stopped the workers.
        ConfigError: If the task cannot be sent to worker processes.

    """
    factory = task.worker_factory()
    n_workers = cfg.n_workers
    if len(early.procs if early is not None else ()) < n_workers:  # some will be spawned now
        check_main_guard(n_workers)
    devices = list(cfg.slots) if cfg.slots is not None else None
    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        # Pass the signal on: each worker stops at its next batch and checkpoints.
        received.append(signum)
        _send(procs, signum)

    saved = dict(os.environ)
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    if early is not None:
        gpus = visible_gpus() if devices is None else devices
        if len(early.procs) == n_workers and not gpus:
            procs.extend(early.hand_over(cfg))
        else:
            early.cancel()
    try:
        for i in range(len(procs), n_workers):
            # A spawned child copies this process's environment when it starts.
            os.environ.update(worker_env(i, n_workers, devices))
            proc = ctx.Process(target=worker_main, args=(factory, cfg, i), name=f"worker-{i}")
            _start_ignoring_sigint(proc, forward)
            procs.append(proc)
            os.environ.clear()
            os.environ.update(saved)
            if received:
                break
        _join(procs, received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.environ.clear()
        os.environ.update(saved)
    codes = [p.exitcode if p.exitcode is not None else -1 for p in procs]
    if received:
        raise Interrupted(
            received[0],
            f"stopped by {signal.Signals(received[0]).name}; running trials will be retried "
            "from their last checkpoints when the search runs again",
        )
    return codes
