"""Writing files so that a crash or a full disk never leaves one half-written.

Every file hpo-trainer writes (checkpoints, params files, summaries, reports, predictions)
goes through :func:`atomic_write`: a temporary file beside the target, renamed over it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hpo_trainer.errors import ConfigError


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


def check_output_path(path: str | os.PathLike[str], example: str) -> Path:
    """Return ``path`` as a ``Path`` if a file can be written there.

    Args:
        path: The file to write.
        example: A file name to suggest when ``path`` is a directory.

    Raises:
        ConfigError: If ``path`` is a directory.

    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"the output file {str(path)!r} is a directory; give a file path, e.g. "
            f"{str(path / example)!r}"
        )
    return path


def write_output(data: str | bytes, path: str | os.PathLike[str], example: str) -> Path:
    """Write a file a user asked for, atomically; a problem is a :class:`ConfigError`.

    Args:
        data: What to write (text is written as UTF-8).
        path: The file to write.
        example: A file name to suggest when ``path`` is a directory.

    Returns:
        The path written.

    Raises:
        ConfigError: If ``path`` is a directory or cannot be written; nothing is left behind.

    """
    path = check_output_path(path, example)
    try:
        return atomic_write(path, data.encode() if isinstance(data, str) else data)
    except OSError as exc:
        raise ConfigError(f"cannot write the output file {str(path)!r}: {exc}") from None
