"""Storage URLs to Optuna storages, and the lock that keeps a shared trial budget exact.

One URL names a study's home everywhere:

* ``sqlite:///path/to/studies.db``: the embedded default, tuned for many local workers
  (WAL journal, ``synchronous=NORMAL``, a long busy timeout, and ``BEGIN IMMEDIATE`` so that
  a transaction never fails halfway with "database is locked" when another worker wrote
  first).
* ``postgresql+psycopg://user:password@host/db``: workers on several machines.
* ``journal:path/to/study.log`` or a path ending in ``.log`` / ``.jsonl``: Optuna's journal
  file, for fast local runs of many tiny trials; ``redis://host:port`` for a journal in Redis.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages import BaseStorage, RDBStorage

from hpo_trainer.base.errors import StorageError

logger = logging.getLogger(__name__)


_FORMS = (
    "sqlite:///path/to/studies.db, postgresql+psycopg://user@host/db, "
    "journal:path/to/study.log (or a path ending in .log), redis://host:6379"
)


#: The URL schemes (before any ``+driver``) this module knows.
_SCHEMES = (
    "sqlite",
    "postgresql",
    "postgres",
    "mysql",
    "mariadb",
    "journal",
    "redis",
    "rediss",
    "unix",
)

#: A URL inside free text (an error message may quote one).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
#: A password given as a query parameter or in a libpq-style DSN.
_PASSWORD_PARAM = re.compile(r"(?i)\b(password|passwd|pwd)=[^&\s'\"]*")


def _mask_one(url: str) -> str:
    """Mask the password of one ``scheme://user:password@host/...`` URL."""
    head, sep, rest = url.partition("://")
    query = rest.find("?")
    # The password may hold '@', '/' or '?': the user info ends at the last '@' before
    # the query, or at the last '@' of all when the query sign is part of the password.
    at = rest.rfind("@", 0, query) if query >= 0 else rest.rfind("@")
    if at < 0 and query >= 0:
        at = rest.rfind("@")
    if at >= 0:
        user, colon, _password = rest[:at].partition(":")
        if colon:
            rest = f"{user}:***{rest[at:]}"
    return head + sep + rest


def mask_url(url: str) -> str:
    """Return ``url`` (or a message quoting URLs) with every password replaced by ``***``.

    Masks ``user:password@`` (also an empty user, and passwords holding ``@``, ``/`` or
    ``?``) and ``password=`` query parameters.

    Args:
        url: A storage URL, or any text that may contain one.

    Returns:
        The text with passwords replaced.

    """
    text = _URL_IN_TEXT.sub(lambda m: _mask_one(m.group(0)), str(url))
    return _PASSWORD_PARAM.sub(lambda m: f"{m.group(1)}=***", text)


def default_url(runs_dir: str | os.PathLike[str]) -> str:
    """Return the default storage: a SQLite file in ``runs_dir``."""
    return f"sqlite:///{Path(runs_dir) / 'studies.db'}"


def absolute_url(url: str) -> str:
    """Return ``url`` with a relative SQLite or journal file made absolute (from the current
    folder), so that it names the same storage from any folder; other URLs as they are.
    """
    spec = parse_url(url)
    if spec.path is None or spec.path.is_absolute():
        return spec.url
    path = spec.path.resolve()
    return f"sqlite:///{path}" if spec.kind == "sqlite" else f"journal:{path}"


@dataclass(frozen=True)
class StorageSpec:
    """A parsed storage URL.

    Attributes:
        url: The URL as given (normalised for journal paths).
        kind: ``sqlite``, ``postgresql``, ``rdb`` (another SQLAlchemy database), ``journal``
            or ``redis``.
        path: The file of a SQLite or journal storage.

    """

    url: str
    kind: str
    path: Path | None = None


def parse_url(url: str) -> StorageSpec:
    """Parse and check a storage URL.

    Raises:
        StorageError: If the URL is not one of the supported forms.

    """
    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"a storage URL must be a non-empty string, got {url!r}; use {_FORMS}")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9]*)(\+[A-Za-z0-9_]+)?:", url)
    if (
        scheme is not None
        and scheme.group(1) != scheme.group(1).lower()
        and scheme.group(1).lower() in _SCHEMES
    ):
        lowered = scheme.group(0).lower() + url[scheme.end() :]
        raise StorageError(
            f"storage URL schemes are lower case: {mask_url(url)!r} starts with "
            f"{scheme.group(0)!r}. Did you mean {mask_url(lowered)!r}?"
        )
    if url.startswith("journal:"):
        path = url[len("journal:") :]
        if not path.strip():
            raise StorageError(
                f"the journal URL {url!r} names no file; give one, e.g. journal:runs/study.log"
            )
        return StorageSpec(url, "journal", Path(path))
    if url.endswith((".log", ".jsonl")) and "://" not in url:
        return StorageSpec(f"journal:{url}", "journal", Path(url))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return StorageSpec(url, "redis")
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path or path == ":memory:":
            raise StorageError(
                f"{url!r} is not shared between workers; give a file, e.g. "
                "sqlite:///runs/studies.db"
            )
        return StorageSpec(url, "sqlite", Path(path))
    if url.startswith("sqlite:"):
        raise StorageError(
            f"invalid SQLite URL {url!r}: it needs three slashes and a file, e.g. "
            "sqlite:///runs/studies.db (relative) or sqlite:////abs/path.db"
        )
    match = re.match(r"^([a-z0-9]+)(\+[a-z0-9_]+)?://", url)
    if match is None:
        hint = (
            " (an existing path? SQLite URLs look like sqlite:///" + url + ")"
            if (url.endswith((".db", ".sqlite", ".sqlite3")))
            else ""
        )
        raise StorageError(f"invalid storage URL {mask_url(url)!r}{hint}; use {_FORMS}")
    dialect = match.group(1)
    if dialect in ("postgresql", "postgres"):
        return StorageSpec(url, "postgresql")
    if dialect in ("mysql", "mariadb"):
        return StorageSpec(url, "rdb")
    raise StorageError(f"unsupported storage {dialect!r} in {mask_url(url)!r}; use {_FORMS}")


def _tune_sqlite(storage: RDBStorage) -> None:
    from sqlalchemy import event

    engine = storage.engine

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" below open transactions instead of pysqlite.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=120000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front: a deferred transaction that reads, then finds that
        # another worker wrote in between, fails at once with "database is locked".
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made while Optuna set up its tables lack the settings


def open_storage(url: str, *, must_exist: bool = False) -> BaseStorage:
    """Open the Optuna storage named by ``url``.

    Dead workers' trials are found by our own heartbeat on every storage
    (:mod:`hpo_trainer.search.heartbeat`), so no storage is opened with Optuna's.

    Args:
        url: A storage URL (see the module docs).
        must_exist: Refuse a SQLite or journal file that does not exist yet, instead of
            creating it (for commands that only read a study).

    Returns:
        The storage.

    Raises:
        StorageError: If the URL is invalid or the storage cannot be reached.

    """
    spec = parse_url(url)
    if must_exist and spec.path is not None and not spec.path.exists():
        raise StorageError(
            f"no study storage at {spec.path}; run `hpo-trainer search STUDY_FILE` first, or "
            "give the storage that holds the study (--storage)"
        )
    if spec.path is not None:
        _prepare_file(spec)
    if spec.kind in ("journal", "redis"):
        return _open_journal(spec)
    return _open_rdb(spec)


def _open_journal(spec: StorageSpec) -> BaseStorage:
    """Open a journal storage: a file, or a Redis server."""
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend, JournalStorage

    if spec.kind == "journal":
        try:
            return JournalStorage(JournalFileBackend(str(spec.path)))
        except OSError as exc:
            raise StorageError(f"cannot open the journal file {spec.path}: {exc}") from None
    try:
        return JournalStorage(JournalRedisBackend(spec.url))
    except ImportError as exc:
        raise StorageError(
            f"{mask_url(spec.url)} needs the redis package: pip install redis ({exc})"
        ) from None
    except Exception as exc:  # redis raises its own ConnectionError, TimeoutError, ...
        raise StorageError(
            f"cannot open the storage {mask_url(spec.url)}: {_first_line(exc)}. Check that "
            "the server is running and the host, port and password are right"
        ) from None


def _set_wal(path: Path) -> None:
    """Put a SQLite file in WAL mode (a property of the file) before anything else opens it."""
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=120)) as con:
            con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:
        raise StorageError(f"cannot open the SQLite file {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise StorageError(
            f"{path} is not a SQLite database ({exc}); give the path of a study "
            "database, or of a file that does not exist yet"
        ) from None


def _open_rdb(spec: StorageSpec) -> RDBStorage:
    """Open a database storage (SQLite, PostgreSQL, ...) through SQLAlchemy."""
    engine_kwargs: dict[str, Any] = {}
    if spec.kind == "sqlite" and spec.path is not None:
        _set_wal(spec.path)
        engine_kwargs["connect_args"] = {"timeout": 120}
    else:
        engine_kwargs.update(pool_pre_ping=True, pool_size=2, max_overflow=2)
    try:
        storage = RDBStorage(spec.url, engine_kwargs=engine_kwargs)
    except ImportError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ImportError) else exc
        missing = getattr(cause, "name", None) or str(cause)
        raise StorageError(
            f"the driver for {mask_url(spec.url)} is not installed ({missing}); for "
            "PostgreSQL: pip install 'hpo-trainer[postgres]' and use postgresql+psycopg://"
        ) from None
    except Exception as exc:  # SQLAlchemy raises many kinds for an unreachable database
        raise StorageError(
            f"cannot open the storage {mask_url(spec.url)}: {_first_line(exc)}. Check that "
            "the server is running and the host, port, user and database are right"
        ) from None
    if spec.kind == "sqlite":
        _tune_sqlite(storage)
    return storage


def _prepare_file(spec: StorageSpec) -> None:
    """Check that a SQLite or journal path can be a file, and create its folder.

    Raises:
        StorageError: If the path is a folder or its folder cannot be created.

    """
    path = spec.path
    if path is None:
        return
    if path.is_dir():
        example = "studies.db" if spec.kind == "sqlite" else "study.log"
        raise StorageError(
            f"the {spec.kind} storage {str(path)!r} is a directory, not a file; name a file "
            f"in it, e.g. {str(path / example)!r}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the folder of the {spec.kind} storage {str(path)!r}: {exc}"
        ) from None


def _server_key(url: str) -> tuple[Any, ...]:
    """Return what identifies the database a server URL names (driver and login aside)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # not a form SQLAlchemy parses: compare the URL itself
        return (url,)
    backend = parsed.drivername.partition("+")[0]
    backend = {"postgres": "postgresql", "mariadb": "mysql", "rediss": "redis"}.get(
        backend, backend
    )
    host = (parsed.host or "localhost").lower()
    host = "localhost" if host in ("127.0.0.1", "::1") else host
    port = parsed.port or {"postgresql": 5432, "mysql": 3306, "redis": 6379}.get(backend)
    database = parsed.database or ("0" if backend == "redis" else None)
    return (backend, host, port, database)


def same_storage(first: str, second: str) -> bool:
    """Return whether two storage URLs name the same storage (the same file or database).

    Files are compared by their resolved path (or as the same file on disk); server URLs by
    kind, host, port and database, ignoring the driver, user and password.

    Args:
        first: A storage URL.
        second: Another storage URL.

    Returns:
        ``True`` if both name one storage.

    """
    try:
        a, b = parse_url(first), parse_url(second)
    except StorageError:
        return False
    if a.path is not None or b.path is not None:
        if a.kind != b.kind or a.path is None or b.path is None:
            return False
        with contextlib.suppress(OSError):
            if a.path.exists() and b.path.exists():
                return os.path.samefile(a.path, b.path)
        return a.path.resolve() == b.path.resolve()
    return _server_key(a.url) == _server_key(b.url)


class StorageFile:
    """The identity of a storage's file (SQLite or journal), to notice it being replaced.

    A study file deleted or replaced while workers run would otherwise go unnoticed: open
    connections keep writing into the deleted file, and the next connection creates an
    empty one in its place.

    Args:
        url: The storage URL; server storages have no file and always pass the check.

    """

    def __init__(self, url: str) -> None:
        self.path = parse_url(url).path
        self._identity = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def check(self) -> None:
        """Raise if the file is gone or is another file than when this object was made.

        Raises:
            StorageError: If the study file was removed or replaced.

        """
        if self.path is not None and self._stat() != self._identity:
            raise StorageError(
                f"the study file {str(self.path)!r} was removed or replaced while the search "
                "ran; the search stopped so that no trial is written into a lost file. "
                "Restore the file (or start a new study) and run the search again"
            )


def _first_line(exc: BaseException) -> str:
    text = mask_url(str(exc)).strip().splitlines()
    return text[0] if text else type(exc).__name__
