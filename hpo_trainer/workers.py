"""Worker processes: spawning them, their environment (threads, GPU), and their signals.

Each local worker is a spawned process running :func:`hpo_trainer.search.run_worker` on
the shared study. It rebuilds the trainer from its study file (or from a pickle of it),
uses ``cores // workers`` torch threads, and sees only its GPU through
``CUDA_VISIBLE_DEVICES``. SIGINT and SIGTERM sent to the parent are passed on to every
worker, which stops at the next batch boundary (see :mod:`hpo_trainer.interrupt`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import signal
from typing import TYPE_CHECKING, Any

import optuna
import torch

from hpo_trainer.errors import ConfigError, Interrupted
from hpo_trainer.search import SearchConfig, run_worker

if TYPE_CHECKING:
    from hpo_trainer.trainer import Trainer

logger = logging.getLogger(__name__)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _visible_gpus() -> list[str]:
    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        return [d.strip() for d in env.split(",") if d.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def device_slots(devices: list[str], per_device: int = 1) -> list[str]:
    """Return one device id per worker slot: each device repeated ``per_device`` times.

    Raises:
        ConfigError: If GPUs are visible and a device id names none of them.

    """
    if torch.cuda.is_available():
        visible = _visible_gpus()
        count = len(visible)
        missing = [d for d in devices if int(d) >= count]
        if missing:
            raise ConfigError(
                f"--devices names GPU {', '.join(missing)}, but only {count} GPU(s) are "
                f"visible (ids 0..{count - 1}); check nvidia-smi or CUDA_VISIBLE_DEVICES"
            )
        devices = [visible[int(d)] for d in devices]
    return [d for d in devices for _ in range(per_device)]


def worker_env(worker: int, n_workers: int, devices: list[str] | None = None) -> dict[str, str]:
    """Return the environment a worker process gets: its torch threads and its GPU.

    Args:
        worker: The worker's index.
        n_workers: How many workers share the machine.
        devices: GPU ids to spread workers over (default: the visible GPUs).

    """
    threads = max(1, _cores() // n_workers)
    env = {"OMP_NUM_THREADS": str(threads), "HPO_TRAINER_THREADS": str(threads)}
    devices = _visible_gpus() if devices is None else devices
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = devices[worker % len(devices)]
    return env


def _worker_main(payload: bytes, cfg: SearchConfig, worker: int) -> None:
    threads = int(os.environ.get("HPO_TRAINER_THREADS", "0"))
    if threads:
        torch.set_num_threads(threads)
    level = os.environ.get("HPO_TRAINER_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level, format=f"[worker {worker}] %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        trainer = load_trainer(payload)
        run_worker(trainer, cfg, worker=worker)
    except KeyboardInterrupt:  # before the worker's own handlers were installed
        raise SystemExit(130) from None
    except Interrupted as exc:
        raise SystemExit(exc.exit_code) from None
    # Everything is in the storage: skip the interpreter's slow tear-down of torch.
    logging.shutdown()
    os._exit(0)


def trainer_payload(trainer: Trainer) -> bytes:
    """Return how a worker process rebuilds ``trainer``: its study file, or the trainer pickled.

    Raises:
        ConfigError: If the trainer cannot be pickled and came from no study file.

    """
    source = getattr(trainer, "source", None)
    if source is not None:
        return pickle.dumps(("file", source))
    try:
        return pickle.dumps(("pickle", pickle.dumps(trainer)))
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise ConfigError(
            f"n_workers > 1 needs a trainer that can be sent to worker processes, but it "
            f"cannot be pickled ({exc}); define models, datasets and metrics at module level "
            "(not in a function or lambda), or use a study file with `hpo-trainer search`"
        ) from exc


def load_trainer(payload: bytes) -> Trainer:
    """Rebuild a trainer from :func:`trainer_payload`."""
    kind, value = pickle.loads(payload)
    if kind == "file":
        from hpo_trainer.studyfile import load_trainer_from_file

        path, options = value
        return load_trainer_from_file(path, **options)
    return pickle.loads(value)


def run_workers(
    trainer: Trainer, cfg: SearchConfig, *, n_workers: int, devices: list[str] | None = None
) -> list[int]:
    """Start ``n_workers`` spawned worker processes on the study and wait for them.

    SIGINT and SIGTERM are passed on to every worker; each stops at its next batch
    boundary, leaves its trial to be retried, and exits with 128 + the signal number.

    Returns:
        The workers' exit codes.

    Raises:
        Interrupted: If a signal stopped the workers.

    """
    payload = trainer_payload(trainer)
    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        # Pass the signal on: each worker stops at its next batch and checkpoints.
        received.append(signum)
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signum)

    saved = dict(os.environ)
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for i in range(n_workers):
            # A spawned child copies this process's environment when it starts.
            os.environ.update(worker_env(i, n_workers, devices))
            proc = ctx.Process(target=_worker_main, args=(payload, cfg, i), name=f"worker-{i}")
            proc.start()
            procs.append(proc)
            os.environ.clear()
            os.environ.update(saved)
            if received:
                break
        for proc in procs:
            proc.join()
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
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    if bad:
        logger.warning("workers exited with errors: %s", bad)
    return codes
