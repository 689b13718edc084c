"""The search engine: options, storage, the worker loop under a shared budget, one trial,
pruning, heartbeats and retries, worker processes. It drives the training layer through a
narrow task interface (:class:`~hpo_trainer.search.task.SearchTask`) and never imports the
facade above it. :func:`~hpo_trainer.search.engine.search` is its one entry point.
"""

from hpo_trainer.search.config import SearchConfig
from hpo_trainer.search.engine import SearchOutcome, search
from hpo_trainer.search.task import SearchTask

__all__ = ["SearchConfig", "SearchOutcome", "SearchTask", "search"]
