"""Where a run computes: device choice, mixed precision, and seeding."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from hpo_trainer.base.errors import ConfigError, did_you_mean, is_int

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the device to use: ``auto`` picks CUDA, then Apple's MPS, then the CPU.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (or such a
            ``torch.device``).

    Returns:
        The device, checked to exist here.

    Raises:
        ConfigError: If the device name is not valid, is of a type other than ``cpu``,
            ``cuda`` and ``mps`` (e.g. ``meta``, which holds no data), or is not available
            here.

    """
    accepted = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        hint = (
            " A GPU is 'cuda' (or 'cuda:0', 'cuda:1', ...)."
            if str(device).strip().lower().startswith(("gpu", "cuda"))
            else did_you_mean(str(device).strip().lower(), ("auto", "cpu", "cuda", "mps"))
        )
        raise ConfigError(f"device must be {accepted}, got {device!r}.{hint}") from exc
    if resolved.type not in ("cpu", "cuda", "mps"):
        # meta, xla, hpu, ... parse, but training and prediction run on these three only
        raise ConfigError(
            f"device must be {accepted}, got {str(device)!r}: the {resolved.type!r} device "
            "type cannot run training or prediction here; use 'auto' to pick the best one"
        )
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {str(device)!r} needs CUDA, but no CUDA GPU is available here (torch "
                f"{torch.__version__}); use device='auto' or 'cpu'"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ConfigError(
                f"device {str(device)!r} names CUDA GPU {resolved.index}, but only {count} "
                f"{'is' if count == 1 else 'are'} visible; use cuda:0 .. cuda:{count - 1}"
            )
    if resolved.type == "mps" and not _mps_available():
        raise ConfigError(
            f"device {str(device)!r} needs Apple's MPS, which is not available here; use "
            "device='auto' or 'cpu'"
        )
    return resolved


def _mps_available() -> bool:
    """Return whether Apple's MPS backend can be used here."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def amp_mode(amp: bool | str | None, device: torch.device) -> str | None:
    """Return the mixed-precision mode to use: ``"bf16"``, ``"fp16"`` or ``None``.

    ``True`` picks bfloat16 where the GPU supports it, else float16 (with a gradient
    scaler). Mixed precision is only used on CUDA; elsewhere it logs why and returns None.

    Raises:
        ConfigError: If ``amp`` is not one of the accepted values.

    """
    if amp in (None, False):
        return None
    if amp not in (True, "bf16", "fp16"):
        raise ConfigError(f"amp must be True, False, 'bf16' or 'fp16', got {amp!r}")
    if device.type != "cuda":
        logger.warning("mixed precision is only used on CUDA; training in float32 on %s", device)
        return None
    if amp is True:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return str(amp)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def visible_gpus() -> list[str]:
    """Return the ids of the GPUs this process may use (``CUDA_VISIBLE_DEVICES`` if set)."""
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
        visible = visible_gpus()
        count = len(visible)
        missing = [d for d in devices if int(d) >= count]
        if missing:
            raise ConfigError(
                f"--devices names GPU {', '.join(missing)}, but only {count} GPU(s) are "
                f"visible (ids 0..{count - 1}); check nvidia-smi or CUDA_VISIBLE_DEVICES"
            )
        devices = [visible[int(d)] for d in devices]
    return [d for d in devices for _ in range(per_device)]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch threads (``None``: as they are), then restore."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def parse_devices(devices: Any) -> list[str]:
    """Return ``devices`` as a list of GPU ids.

    Args:
        devices: GPU ids as the command line takes them (``"0,1"``), one id (``0``), or a
            list of ids (``[0, 1]`` or ``["0", "1"]``).

    Returns:
        The ids as strings (``["0", "1"]``), as ``CUDA_VISIBLE_DEVICES`` names them.

    Raises:
        ConfigError: If they are not distinct whole numbers from 0, or there are none.

    """
    if isinstance(devices, str):
        items: Any = devices.split(",")
    else:
        items = [devices] if is_int(devices, 0) else devices
    texts = [str(d).strip() for d in items] if isinstance(items, (list, tuple)) else []
    ids = [str(int(t)) for t in texts if re.fullmatch(r"[0-9]+", t)]
    if texts and len(ids) == len(texts) == len(set(ids)):
        return ids
    numbers = [re.fullmatch(r"(?:cuda|gpu)\s*:?\s*([0-9]+)", t, re.IGNORECASE) for t in texts]
    hint = " (leave devices out to spread workers over the visible GPUs)"
    if texts and len(ids) == len(texts):
        hint = (
            "; name each GPU once, and give workers_per_device (--workers-per-device) for "
            "several workers on one"
        )
    elif texts and all(numbers):
        named = ",".join(str(int(m.group(1))) for m in numbers if m is not None)
        hint = f"; GPUs are named by their index: did you mean {named!r}?"
    raise ConfigError(
        "devices must be distinct GPU ids separated by commas or in a list, e.g. 0,1,2,3 or "
        f"[0, 1]; got {devices!r}{hint}"
    )
