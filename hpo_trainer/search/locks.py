"""The budget lock: it serialises "count the trials, then start one" across workers.

Holding it while counting and starting a trial makes a shared budget exact: two workers can
never both see room for the last trial. Only that is done under it, in work that does not grow
with the study (:mod:`hpo_trainer.search.start`); the sampler runs after it is released. A
file storage uses a lock file beside it (``filelock``, which works on Linux, macOS and
Windows); PostgreSQL an advisory lock; Redis a lock key that expires if its holder dies. A
storage with no such lock (MySQL, MariaDB) is refused (:func:`budget_lock_problem`): its
budget would silently not be exact.
"""

from __future__ import annotations

import re
from typing import Any

from filelock import FileLock
from optuna.storages import BaseStorage

from hpo_trainer.base.errors import StorageError
from hpo_trainer.search.storage import mask_url, parse_url


class _AdvisoryLock:
    """A PostgreSQL advisory lock: one key per study, held by one session at a time.

    The lock belongs to the database session, not to a transaction: a connection that is
    handed back to the pool while it holds (or may still be granted) the lock would keep
    it from every other worker. So on any failure the connection is invalidated, which
    ends its session and with it the lock, instead of being returned to the pool.
    """

    def __init__(self, storage: BaseStorage, key: str) -> None:
        self.engine = getattr(storage, "engine", None)
        self.key = key
        self._conn: Any = None

    def __enter__(self) -> None:
        from sqlalchemy import text

        conn = self.engine.connect()
        try:
            conn.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": self.key})
        except BaseException:  # a timeout, a lost server, Ctrl-C while waiting
            _discard(conn)
            raise
        self._conn = conn

    def __exit__(self, *exc: object) -> None:
        from sqlalchemy import text

        conn, self._conn = self._conn, None
        try:
            conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": self.key})
        except BaseException:
            _discard(conn)
            raise
        conn.close()


def _discard(conn: Any) -> None:
    """Close ``conn`` and its database session (not back into the pool)."""
    try:
        conn.invalidate()
    finally:
        conn.close()


def budget_lock_problem(url: str) -> str | None:
    """Say why the storage ``url`` cannot keep a budget exact, or return ``None`` if it can.

    Args:
        url: A storage URL (see :func:`~hpo_trainer.search.storage.parse_url`).

    Returns:
        One sentence with the reason and the fix, or ``None``.

    Raises:
        StorageError: If the URL is not one of the supported forms.

    """
    spec = parse_url(url)
    if spec.kind in ("sqlite", "journal", "postgresql", "redis"):
        return None
    return (
        f"the storage {mask_url(url)!r} cannot keep the trial budget exact: workers sharing "
        "a study take a lock while they count the trials and start one, and hpo-trainer has "
        "that lock only for SQLite, journal files, PostgreSQL (an advisory lock) and Redis, "
        "so on this database two workers could both start the last trial. Use one of those "
        "storages, e.g. postgresql+psycopg://user@host/db (MySQL and MariaDB would need a "
        "driver such as pymysql and a lock through GET_LOCK, which hpo-trainer does not take)"
    )


def budget_lock(url: str, storage: BaseStorage, study_name: str) -> Any:
    """Return the lock that guards the budget of study ``study_name`` in ``storage``.

    Args:
        url: The storage URL.
        storage: The opened storage.
        study_name: The study whose budget the lock guards.

    Returns:
        A context manager; entering it waits for the lock.

    Raises:
        StorageError: If the storage has no such lock (see :func:`budget_lock_problem`).

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
    problem = budget_lock_problem(url) or (
        f"the budget lock of {mask_url(url)!r} needs the storage opened from that URL (with "
        f"its database engine), got a {type(storage).__name__}; open it with open_storage"
    )
    raise StorageError(problem)
