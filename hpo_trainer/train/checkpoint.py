"""Checkpoints: atomic writes, verified safe loads, and the random states a resume needs.

A checkpoint is a plain dict (``model``, ``optimizer``, ``scheduler``, ``epoch``, ``params``,
``history``, ``rng``, ...). It is written to a temporary file in the same folder, flushed to
disk and renamed over the target, so a crash never leaves a half-written checkpoint under the
real name. Its size and SHA-256 are written beside it (``<name>.meta.json``) and checked on
load; loading uses ``torch.load(weights_only=True)``, which runs no pickled code.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hpo_trainer.base.errors import CheckpointError
from hpo_trainer.base.files import atomic_write
from hpo_trainer.train.callback import callback_states

if TYPE_CHECKING:
    from hpo_trainer.train.state import FitState

logger = logging.getLogger(__name__)

_META_SUFFIX = ".meta.json"


def save(obj: dict[str, Any], path: str | os.PathLike[str], *, durable: bool = True) -> Path:
    """Write a checkpoint atomically, with its size and checksum beside it.

    Args:
        obj: The checkpoint dict (tensors, containers and plain values only).
        path: Where to write it.
        durable: Flush it to the disk before renaming it into place (survives a power cut,
            not only a crash of the process); costs a millisecond or more per save.

    Returns:
        The path written.

    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    meta = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    # The checkpoint first, then its meta: a crash in between leaves a checkpoint whose
    # meta does not match, which load() reports as damaged rather than trusting it.
    atomic_write(path, data, durable=durable)
    atomic_write(
        path.with_name(path.name + _META_SUFFIX), json.dumps(meta).encode(), durable=durable
    )
    return path


def load(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely, checking it against its recorded size and checksum.

    Args:
        path: The checkpoint file.
        map_location: Where tensors are loaded (see ``torch.load``).

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: If the file is missing, damaged, or holds anything but tensors and
            plain values.

    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    meta_path = path.with_name(path.name + _META_SUFFIX)
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = None
        if (
            not isinstance(meta, dict)
            or meta.get("size") != len(data)
            or meta.get("sha256") != hashlib.sha256(data).hexdigest()
        ):
            raise CheckpointError(
                f"checkpoint {path} is damaged: its size or checksum does not match "
                f"{meta_path.name} (truncated or overwritten)"
            )
    try:
        obj = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused a pickled object: nothing ran
        raise CheckpointError(
            f"checkpoint {path} holds pickled Python objects, which are never loaded (loading "
            "them could run code); it was not written by hpo-trainer, or it was altered"
        ) from None
    except Exception as exc:  # torch raises many kinds for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read: {first}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    return obj


def load_latest(paths: list[Path], *, map_location: Any = "cpu") -> dict[str, Any] | None:
    """Load the newest good checkpoint of ``paths`` (sorted oldest first), skipping damaged ones.

    Returns:
        The checkpoint, or ``None`` if none of them can be loaded.

    """
    for path in reversed(paths):
        try:
            ckpt = load(path, map_location=map_location)
        except CheckpointError as exc:
            logger.warning("%s; trying an earlier checkpoint", exc)
            continue
        ckpt["path"] = str(path)
        return ckpt
    return None


def remove(path: str | os.PathLike[str]) -> None:
    """Delete a checkpoint and its meta file, if they exist."""
    path = Path(path)
    path.unlink(missing_ok=True)
    path.with_name(path.name + _META_SUFFIX).unlink(missing_ok=True)


def rng_state(loader_generator: torch.Generator | None) -> dict[str, Any]:
    """Capture every random state a resumed run needs to repeat an uninterrupted one."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": _tuples_to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], loader_generator: torch.Generator | None) -> None:
    """Restore the random states captured by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_lists_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


def _tuples_to_lists(x: Any) -> Any:
    return [_tuples_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _lists_to_tuples(x: Any) -> Any:
    return tuple(_lists_to_tuples(v) for v in x) if isinstance(x, list) else x


def snapshot(obj: Any) -> Any:
    """Return a copy of a checkpoint dict that training can no longer change, tensors on the CPU.

    ``state_dict()`` hands out the live parameter and buffer tensors, which the next
    optimizer step changes in place; a checkpoint written later (in a background thread) must
    hold this epoch's values. Copying to the CPU, rather than cloning on the device, keeps a
    GPU from holding a second copy of the model and optimizer while the file is written.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [snapshot(v) for v in obj]
    if isinstance(obj, tuple):
        items = [snapshot(v) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    return obj  # numbers, strings, classes: not changed by training


def capture(state: FitState) -> dict[str, Any]:
    """Return the checkpoint dict of a run's state after a completed epoch.

    It includes the states of the running fit's callbacks (``state.callbacks``), keyed by
    class name and position, so that a resume hands each its own back.
    """
    return {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "epoch": state.epoch,
        "epochs": state.epochs,
        "params": state.params,
        "history": {k: list(v) for k, v in state.history.items()},
        "rng": rng_state(state.loader_generator),
        "callbacks": callback_states(state.callbacks),
    }


def restore(state: FitState, ckpt: dict[str, Any]) -> None:
    """Put a run's state back as it was when ``ckpt`` was captured.

    The callbacks' states are kept on ``state.callback_states``; the next
    :func:`~hpo_trainer.train.loop.fit` hands them to its callbacks before they start.

    Raises:
        CheckpointError: If the checkpoint does not fit the model or optimizer.

    """
    try:
        state.model.load_state_dict(ckpt["model"])
        state.optimizer.load_state_dict(ckpt["optimizer"])
        if state.scheduler is not None and ckpt.get("scheduler") is not None:
            state.scheduler.load_state_dict(ckpt["scheduler"])
        if state.scaler is not None and ckpt.get("scaler") is not None:
            state.scaler.load_state_dict(ckpt["scaler"])
    except (KeyError, RuntimeError, ValueError) as exc:
        where = ckpt.get("path", "the checkpoint")
        raise CheckpointError(
            f"{where} does not fit this run's model or optimizer ({exc}); resume with the "
            "same study file and parameters it was written with"
        ) from exc
    state.epoch = int(ckpt["epoch"])
    state.history.clear()
    state.history.update({k: list(v) for k, v in ckpt.get("history", {}).items()})
    state.metrics = {k: v[-1] for k, v in state.history.items() if v}
    state.callback_states = {k: dict(v) for k, v in (ckpt.get("callbacks") or {}).items()}
    set_rng_state(ckpt["rng"], state.loader_generator)
