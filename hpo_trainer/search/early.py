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

import contextlib
import importlib
import logging
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

logger = logging.getLogger(__name__)

#: Seconds :meth:`EarlyWorkers.cancel` waits, in all, for cancelled workers to exit by
#: themselves (they finish building their task first) before terminating them.
CANCEL_GRACE = 30.0
#: Seconds a terminated process gets to exit before it is killed.
_TERM_GRACE = 5.0


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


@contextlib.contextmanager
def scoped_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block, then put back what each key held.

    A spawned child copies the environment when it starts, so this is how a worker gets its
    settings without changing the parent's environment for the rest of the process. Only
    the keys in ``values`` are restored: other changes made meanwhile stay.

    Args:
        values: The variables to set.

    """
    before = {key: os.environ.get(key) for key in values}
    try:
        os.environ.update(values)
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT in the block (processes started in it inherit that), then restore it.

    A Ctrl-C at the terminal reaches every process of the group; a worker still importing
    torch would die of it with a long traceback. The parent passes the signal on instead,
    once the worker's own handler is in place. Does nothing on Windows.
    """
    if sys.platform == "win32":
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def reap(procs: Sequence[Any], *, grace: float) -> None:
    """Wait up to ``grace`` seconds in all for ``procs`` to exit; terminate those still alive,
    and kill those that outlive the termination by a few seconds.

    Args:
        procs: Started :class:`multiprocessing.Process` objects.
        grace: Seconds they may take to exit by themselves.

    """
    deadline = time.monotonic() + grace
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    late = [proc for proc in procs if proc.is_alive()]
    for proc in late:
        logger.warning("%s did not exit within %g s; terminating it", proc.name, grace)
        proc.terminate()
    deadline = time.monotonic() + _TERM_GRACE
    for proc in late:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()  # cannot be ignored
            proc.join(_TERM_GRACE)


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
            there, not here), e.g. ``"hpo_trainer.facade.studyfile:load_trainer_from_file"``.
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
        try:
            # A spawned child copies the environment (torch reads its threads at import) and
            # the ignored SIGINT: Ctrl-C goes to the command, which passes it on.
            with scoped_environ(threads_env(n_workers)), sigint_ignored():
                for i in range(n_workers):
                    reader, writer = ctx.Pipe(duplex=False)
                    self._conns.append(writer)
                    proc = ctx.Process(
                        target=_early_main,
                        args=(build, args, kwargs, i, reader),
                        name=f"worker-{i}",
                    )
                    try:
                        proc.start()
                    finally:
                        reader.close()
                    self.procs.append(proc)
        except BaseException:
            self.cancel()  # those already started exit, as after a refused search
            raise

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

    def cancel(self, grace: float = CANCEL_GRACE) -> None:
        """Let the workers not handed over exit without doing anything, and wait for them.

        A worker exits once it has built its task; one that takes longer than ``grace``
        seconds (a study file that hangs) is terminated, then killed.

        Args:
            grace: Seconds, in all, to wait for the workers to exit by themselves.

        """
        if not self._conns:
            return
        for conn in self._conns:
            try:
                conn.send(None)
            except OSError:  # that worker is gone already
                pass
            conn.close()
        self._conns = []
        reap(self.procs, grace=grace)
