"""Writing files so that a crash or a full disk never leaves one half-written.

Every file hpo-trainer writes (checkpoints, params files, summaries, reports, predictions)
goes through :func:`atomic_write`: a temporary file beside the target, renamed over it.
A file a user names (``--out``) goes through :func:`write_output`, which first refuses to
write over what the command reads: the study database, the study file, the input.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from hpo_trainer.base.errors import ConfigError

#: The first bytes of every SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"


def _file_mode() -> int:
    """Return the mode ``open()`` gives a new file under this process's umask."""
    mask = os.umask(0o022)  # read it: umask can only be read by setting it
    os.umask(mask)
    return 0o666 & ~mask


_MODE = _file_mode()


def atomic_write(path: str | os.PathLike[str], data: bytes, *, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename it.

    Args:
        path: The file to write (its folder is created).
        data: The bytes to write.
        durable: Also flush the file to the disk before the rename (survives a power cut,
            not only a crash of the process); costs a millisecond or more.

    Returns:
        The path written.

    Raises:
        OSError: If the file cannot be written; the temporary file is removed.

    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _MODE)  # mkstemp makes it private; a written file is as open() makes one
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def same_file(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> bool:
    """Return whether two paths name one file (hard links and symbolic links included).

    Args:
        first: A path.
        second: Another path; either may not exist yet.

    Returns:
        ``True`` if both exist and are the same file on disk, or if either is missing and
        both resolve to the same path.

    """
    a, b = Path(first), Path(second)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # unreadable, or a loop of symbolic links
        return os.path.abspath(a) == os.path.abspath(b)


def _is_sqlite(path: Path) -> bool:
    """Return whether ``path`` is an existing file that starts like a SQLite database."""
    try:
        with path.open("rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:  # missing, a folder, unreadable: not a database we could destroy
        return False


def _own_file(path: Path) -> str | None:
    """Say what ``path`` is if it is a file hpo-trainer keeps (never an output), else ``None``.

    A journal storage (its lines are Optuna's operations), a checksum file beside a
    checkpoint, a run's ``summary.json``, and any existing file in a run, trial or
    checkpoint folder.
    """
    if not path.is_file():
        return None
    if path.name.endswith(".meta.json"):
        return "the checksum of a checkpoint"
    if path.name == "summary.json":
        return "a run's summary"
    folder = path.parent
    if (folder / "summary.json").is_file() or any(folder.glob("*.pt.meta.json")):
        return "a file of a run folder or a trial's checkpoints"
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if head.lstrip().startswith(b'{"op_code"'):
        return "a journal storage (a study's history)"
    return None


def _suggest(path: Path, example: str) -> str:
    """Return ``example`` beside ``path``: the file name to offer instead of ``path``."""
    return str(path.with_name(example)) if path.name else example


def check_output_path(
    path: str | os.PathLike[str],
    example: str,
    *,
    reads: Iterable[str | os.PathLike[str] | None] = (),
    suffixes: Iterable[str] = (),
) -> Path:
    """Return ``path`` as a ``Path`` if a file a user asked for may be written there.

    Call it before the work that makes the file, so that a bad path fails at once; the
    checks are the same as :func:`write_output`'s.

    Args:
        path: The file to write.
        example: A file name to suggest instead (e.g. ``"best.json"``).
        reads: The files the command reads (``None`` entries are skipped): ``path`` may be
            none of them, by any name (a hard link or a symbolic link is the same file).
        suffixes: The suffixes the command writes (e.g. ``(".json",)``, compared without
            case); empty: any suffix.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ConfigError: If ``path`` is a directory, is a file the command reads or an existing
            SQLite database, or does not end in one of ``suffixes``.

    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"the output file {str(path)!r} is a directory; give a file path, e.g. "
            f"{str(path / example)!r}"
        )
    for read in reads:
        if read is not None and same_file(path, read):
            raise ConfigError(
                f"the output file must not be a file this command reads, but {str(path)!r} "
                f"is the same file as {str(read)!r}; writing it would destroy what was read. "
                f"Give another file, e.g. {_suggest(path, example)!r}"
            )
    own = _own_file(path)
    if own is not None:
        raise ConfigError(
            f"the output file must not be one of hpo-trainer's own files, but {str(path)!r} "
            f"is {own}; it is never written over. Give another file, e.g. "
            f"{_suggest(Path(path.name).with_name(example), example)!r}"
        )
    if _is_sqlite(path):
        raise ConfigError(
            f"the output file must not be a SQLite database (a study storage), but "
            f"{str(path)!r} is one; it is never written over. Give another file, e.g. "
            f"{_suggest(path, example)!r}"
        )
    allowed = tuple(s.lower() for s in suffixes)
    if allowed and path.suffix.lower() not in allowed:
        raise ConfigError(
            f"the output file must end in {' or '.join(allowed)}, got {str(path)!r}; give a "
            f"file such as {_suggest(path, example)!r}"
        )
    return path


def write_output(
    data: str | bytes,
    path: str | os.PathLike[str],
    example: str,
    *,
    reads: Iterable[str | os.PathLike[str] | None] = (),
    suffixes: Iterable[str] = (),
) -> Path:
    """Write a file a user asked for, atomically; a problem is a :class:`ConfigError`.

    Nothing is written when ``path`` is refused (see :func:`check_output_path`), and a
    failed write leaves nothing behind.

    Args:
        data: What to write (text is written as UTF-8).
        path: The file to write.
        example: A file name to suggest instead (e.g. ``"best.json"``).
        reads: The files the command reads; ``path`` may be none of them.
        suffixes: The suffixes the command writes; empty: any suffix.

    Returns:
        The path written.

    Raises:
        ConfigError: If ``path`` is a directory, has a suffix not in ``suffixes``, is a file
            the command reads or an existing SQLite database, or cannot be written.

    """
    path = check_output_path(path, example, reads=reads, suffixes=suffixes)
    try:
        return atomic_write(path, data.encode() if isinstance(data, str) else data)
    except OSError as exc:
        raise ConfigError(f"cannot write the output file {str(path)!r}: {exc}") from None
