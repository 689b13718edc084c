"""Worker processes started early: before this process imports torch and builds its study.

A spawned worker spends most of its start-up importing torch and Optuna and building the
task from the study file; so does the command that starts it. ``hpo-trainer search`` with
several local workers therefore starts them first, with only the study file's path and
options, and hands each one the checked configuration once the study exists
(:meth:`EarlyWorkers.hand_over`). Both start-ups then overlap instead of following each
other. If the search is refused, or turns out to need something else (one worker, GPUs),
:meth:`EarlyWorkers.cancel` lets them exit quietly.

This module imports nothing heavy, so that starting the workers costs the command next to
nothing.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import shutil
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

logger = logging.getLogger(__name__)


def cores() -> int:
    """Return the CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_env(n_workers: int) -> dict[str, str]:
    """Return the environment that gives each of ``n_workers`` workers its torch threads."""
    threads = max(1, cores() // n_workers)
    return {"OMP_NUM_THREADS": str(threads), "HPO_TRAINER_THREADS": str(threads)}


def may_have_cuda() -> bool:
    """Whether an NVIDIA GPU may be present, judged without importing torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


def _resolve(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _early_main(
    build: str, args: tuple[Any, ...], kwargs: dict[str, Any], worker: int, conn: Connection
) -> None:
    """Build the task, wait for the configuration, run the worker loop (a worker started early)."""
    from hpo_trainer.search.workerproc import worker_main

    task, error = None, None
    try:
        task = _resolve(build)(*args, **kwargs)
    except Exception as exc:  # said only if the search goes ahead (the parent fails too)
        error = exc
    try:
        cfg = conn.recv()
    except (EOFError, OSError):  # the command is gone
        cfg = None
    conn.close()
    if cfg is None:
        os._exit(0)
    if task is None:
        logging.basicConfig(format=f"[worker {worker}] %(message)s")
        logging.getLogger(__name__).error("could not build the task: %s", error)
        raise SystemExit(1)
    worker_main(lambda: task, cfg, worker)


class EarlyWorkers:
    """``n_workers`` worker processes building their task while this process builds its own.

    Use it as a context manager: workers not handed a configuration by the end of the block
    are cancelled.

    Args:
        build: What builds the task in each worker, as ``"module:function"`` (imported
            there, not here), e.g. ``"hpo_trainer.studyfile:load_trainer_from_file"``.
        args: Its positional arguments (e.g. the study file's path).
        kwargs: Its keyword arguments.
        n_workers: How many workers to start.

    """

    def __init__(
        self, build: str, args: tuple[Any, ...], kwargs: dict[str, Any], n_workers: int
    ) -> None:
        ctx = mp.get_context("spawn")
        self.procs: list[Any] = []
        self._conns: list[Connection] = []
        saved = dict(os.environ)
        handler = signal.getsignal(signal.SIGINT)
        try:
            # A spawned child copies the environment; torch reads its threads at import.
            os.environ.update(threads_env(n_workers))
            if sys.platform != "win32":  # Ctrl-C goes to the command, which passes it on
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            for i in range(n_workers):
                reader, writer = ctx.Pipe(duplex=False)
                proc = ctx.Process(
                    target=_early_main,
                    args=(build, args, kwargs, i, reader),
                    name=f"worker-{i}",
                )
                proc.start()
                reader.close()
                self.procs.append(proc)
                self._conns.append(writer)
        finally:
            if sys.platform != "win32":
                signal.signal(signal.SIGINT, handler)
            os.environ.clear()
            os.environ.update(saved)

    def __enter__(self) -> EarlyWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def hand_over(self, cfg: Any) -> list[Any]:
        """Send each worker the configuration; return the processes, now the caller's."""
        for conn in self._conns:
            conn.send(cfg)
            conn.close()
        self._conns = []
        return self.procs

    def cancel(self) -> None:
        """Let the workers not handed over exit without doing anything, and wait for them."""
        if not self._conns:
            return
        for conn in self._conns:
            try:
                conn.send(None)
            except OSError:  # that worker is gone already
                pass
            conn.close()
        self._conns = []
        for proc in self.procs:
            proc.join()
