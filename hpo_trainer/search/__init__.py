"""The search engine: options, storage, the worker loop under a shared budget, one trial,
pruning, heartbeats and retries, worker processes. It drives the training layer through a
narrow task interface (:class:`~hpo_trainer.search.task.SearchTask`) and never imports the
facade above it. :func:`~hpo_trainer.search.engine.search` is its one entry point.

The names below are imported on first use, so that a module of the engine can be loaded
alone: the trial-start path (:mod:`hpo_trainer.search.start`) loads without PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpo_trainer.search.config import SearchConfig
    from hpo_trainer.search.engine import SearchOutcome, search
    from hpo_trainer.search.task import SearchTask

#: Where each lazily imported public name lives.
_LAZY = {
    "SearchConfig": "hpo_trainer.search.config",
    "SearchOutcome": "hpo_trainer.search.engine",
    "search": "hpo_trainer.search.engine",
    "SearchTask": "hpo_trainer.search.task",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hpo_trainer.search' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["SearchConfig", "SearchOutcome", "SearchTask", "search"]
