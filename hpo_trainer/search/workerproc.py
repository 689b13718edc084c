"""The body of a worker process: its torch threads, its logging, the worker loop, its exit.

Both kinds of worker process run it: those spawned when a search starts
(:mod:`~hpo_trainer.search.processes`) and those started early, before the study existed
(:mod:`~hpo_trainer.search.early`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import optuna
import torch

from hpo_trainer.base.errors import HpoTrainerError, Interrupted
from hpo_trainer.search.config import SearchConfig
from hpo_trainer.search.task import SearchTask
from hpo_trainer.search.worker import run_worker


def worker_main(factory: Callable[[], SearchTask], cfg: SearchConfig, worker: int) -> None:
    """Build the task, run the worker loop and exit: the body of a worker process."""
    threads = int(os.environ.get("HPO_TRAINER_THREADS", "0"))
    if threads:
        torch.set_num_threads(threads)
    level = os.environ.get("HPO_TRAINER_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level, format=f"[worker {worker}] %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        run_worker(factory(), cfg, worker=worker)
    except KeyboardInterrupt:  # before the worker's own handlers were installed
        raise SystemExit(130) from None
    except Interrupted as exc:
        raise SystemExit(exc.exit_code) from None
    except HpoTrainerError as exc:  # said in one line; the parent reports the exit code
        logging.getLogger(__name__).error("%s", exc)
        raise SystemExit(1) from None
    # Everything is in the storage: skip the interpreter's slow tear-down of torch.
    logging.shutdown()
    os._exit(0)
