"""The budget lock: it serialises "count the trials, then start one" across workers.

Holding it while counting and asking makes a shared budget exact: two workers can never
both see room for the last trial. A file storage uses a lock file beside it (``filelock``,
which works on Linux, macOS and Windows); PostgreSQL an advisory lock; Redis a lock key
that expires if its holder dies.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from filelock import FileLock
from optuna.storages import BaseStorage

from hpo_trainer.search.storage import parse_url


class _AdvisoryLock:
    """A PostgreSQL advisory lock: one key per study, held by one session at a time."""

    def __init__(self, storage: BaseStorage, key: str) -> None:
        self.engine = getattr(storage, "engine", None)
        self.key = key
        self._conn: Any = None

    def __enter__(self) -> None:
        from sqlalchemy import text

        self._conn = self.engine.connect()
        self._conn.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": self.key})

    def __exit__(self, *exc: object) -> None:
        from sqlalchemy import text

        try:
            self._conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": self.key})
        finally:
            self._conn.close()
            self._conn = None


def budget_lock(url: str, storage: BaseStorage, study_name: str) -> Any:
    """Return the lock that guards the budget of study ``study_name`` in ``storage``.

    Args:
        url: The storage URL.
        storage: The opened storage.
        study_name: The study whose budget the lock guards.

    Returns:
        A context manager; entering it waits for the lock.

    """
    spec = parse_url(url)
    if spec.kind in ("sqlite", "journal") and spec.path is not None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)
        path = spec.path.with_name(f"{spec.path.name}.{safe}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Each thread holds its own handle, so threads of one process exclude each other too.
        return FileLock(path)
    if spec.kind == "postgresql" and getattr(storage, "engine", None) is not None:
        return _AdvisoryLock(storage, f"hpo-trainer:{study_name}")
    if spec.kind == "redis":
        import redis

        return redis.Redis.from_url(spec.url).lock(
            f"hpo-trainer:budget:{study_name}", timeout=60, blocking_timeout=120
        )
    return contextlib.nullcontext()
