"""Inputs and outputs of ``hpo-trainer predict``: arrays read from files or image folders,
and predictions written as CSV, JSON or ``.npy``.

Inputs: ``.npy``, ``.npz`` (its one array, or the one named by ``key``), ``.pt`` (a tensor,
loaded with ``weights_only=True``), ``.csv`` (numeric columns, an optional header row), or a
folder of images read through an evaluation transform. Outputs are written atomically, so
an error leaves nothing behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpo_trainer.errors import ConfigError, DataError

#: The input files ``predict`` reads, by suffix.
INPUT_SUFFIXES = (".npy", ".npz", ".pt", ".csv")
#: The output files ``predict`` writes, by suffix.
OUTPUT_SUFFIXES = (".csv", ".json", ".npy")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def read_input(
    path: str | os.PathLike[str],
    *,
    key: str | None = None,
    transform: Callable[[Any], Any] | None = None,
) -> tuple[torch.Tensor, list[str] | None]:
    """Read the examples to predict, one per row (or per image).

    Args:
        path: A ``.npy``, ``.npz``, ``.pt`` or ``.csv`` file, or a folder of images.
        key: The array of an ``.npz`` file that holds several.
        transform: Turns one PIL image into a tensor (image folders only).

    Returns:
        The examples as one tensor, and the image files' paths relative to the folder
        (``None`` for an array file).

    Raises:
        ConfigError: If the path is missing or of a kind that cannot be read.
        DataError: If the file cannot be read or holds no numeric examples.

    """
    path = Path(path)
    if path.is_dir():
        return _read_images(path, transform)
    if not path.is_file():
        raise ConfigError(
            f"input {str(path)!r} does not exist; give a {', '.join(INPUT_SUFFIXES)} file or "
            "a folder of images"
        )
    suffix = path.suffix.lower()
    readers = {".npy": _read_npy, ".npz": _read_npz, ".pt": _read_pt, ".csv": _read_csv}
    if suffix not in readers:
        raise ConfigError(
            f"input {str(path)!r} must end in one of {', '.join(INPUT_SUFFIXES)} or be a "
            f"folder of images, got {suffix or 'no suffix'!r}"
        )
    try:
        array = readers[suffix](path, key)
    except (DataError, ConfigError):
        raise
    except Exception as exc:  # numpy and torch raise many kinds for a bad file
        raise DataError(
            f"input {str(path)!r} cannot be read: {type(exc).__name__}: {exc}"
        ) from exc
    return _as_examples(array, path), None


def _as_examples(array: Any, path: Path) -> torch.Tensor:
    tensor = array if isinstance(array, torch.Tensor) else torch.as_tensor(np.asarray(array))
    if tensor.dtype == torch.bool or not (tensor.is_floating_point() or _is_int(tensor)):
        raise DataError(
            f"input {str(path)!r} must hold numbers, got dtype {tensor.dtype}; convert it to "
            "float32"
        )
    if tensor.dim() == 0 or len(tensor) == 0:
        raise DataError(
            f"input {str(path)!r} holds no examples (shape {tuple(tensor.shape)}); give one "
            "example per row"
        )
    return tensor


def _is_int(tensor: torch.Tensor) -> bool:
    return not tensor.is_floating_point() and not tensor.is_complex()


def _read_npy(path: Path, key: str | None) -> Any:
    return np.load(path, allow_pickle=False)


def _read_npz(path: Path, key: str | None) -> Any:
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        if key is None and len(names) == 1:
            return archive[names[0]]
        if key is None:
            raise ConfigError(
                f"input {str(path)!r} holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                "choose one with --key"
            )
        if key not in names:
            raise ConfigError(
                f"input {str(path)!r} has no array {key!r}; it has {', '.join(names) or 'none'}"
            )
        return archive[key]


def _read_pt(path: Path, key: str | None) -> Any:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and key is not None:
        obj = obj.get(key)
    if not isinstance(obj, torch.Tensor):
        raise DataError(
            f"input {str(path)!r} must hold one tensor (torch.save(x, path)), got "
            f"{type(obj).__name__}"
        )
    return obj


def _read_csv(path: Path, key: str | None) -> Any:
    rows = [r for r in csv.reader(io.StringIO(path.read_text())) if any(c.strip() for c in r)]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header row
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise DataError(
            f"input {str(path)!r} must have the same number of columns in every row, got "
            f"{sorted(widths)}"
        )
    for i, row in enumerate(rows):
        if not _numeric(row):
            raise DataError(
                f"input {str(path)!r} must hold numeric columns only, but data row {i + 1} is "
                f"{row[:5]!r}; remove text columns (ids, labels) first"
            )
    return np.array([[float(c) for c in r] for r in rows], dtype=np.float32).reshape(len(rows), -1)


def _numeric(row: list[str]) -> bool:
    try:
        [float(c) for c in row]
    except ValueError:
        return False
    return True


def _read_images(folder: Path, transform: Callable[[Any], Any] | None) -> Any:
    from PIL import Image

    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise DataError(
            f"input folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})"
        )
    if transform is None:
        from torchvision.transforms.functional import pil_to_tensor

        def transform(image: Any) -> Any:
            return pil_to_tensor(image).float() / 255.0

    tensors = []
    for path in files:
        try:
            with Image.open(path) as image:
                tensors.append(torch.as_tensor(transform(image.convert("RGB"))))
        except Exception as exc:
            raise DataError(
                f"image {str(path)!r} cannot be read or transformed: {type(exc).__name__}: {exc}"
            ) from exc
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise DataError(
            f"the images in {str(folder)!r} have different sizes after the transform "
            f"({sorted(shapes)}); resize them, or name an EVAL_TRANSFORM in the study file "
            "that does"
        )
    return torch.stack(tensors), [str(p.relative_to(folder)) for p in files]


def output_kind(path: str | os.PathLike[str] | None) -> str:
    """Return the output format of ``path`` (``csv``, ``json`` or ``npy``; stdout is CSV).

    Raises:
        ConfigError: If the suffix is not one of :data:`OUTPUT_SUFFIXES` or it is a folder.

    """
    if path is None:
        return "csv"
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(
            f"--out {str(path)!r} must be a file ending in one of {', '.join(OUTPUT_SUFFIXES)} "
            "(the suffix chooses the format), e.g. predictions.csv"
        )
    return suffix[1:]


def table(outputs: np.ndarray, *, classification: bool) -> dict[str, Any]:
    """Return the predictions as columns: ``class`` and ``prob_<k>`` for classification
    (softmax of the outputs), ``value`` or ``value_<k>`` for regression.
    """
    rows = outputs.reshape(len(outputs), -1)
    if classification:
        probs = torch.softmax(torch.as_tensor(rows, dtype=torch.float64), dim=1).numpy()
        columns: dict[str, Any] = {"class": rows.argmax(axis=1)}
        columns.update({f"prob_{k}": probs[:, k] for k in range(probs.shape[1])})
        return columns
    if rows.shape[1] == 1:
        return {"value": rows[:, 0]}
    return {f"value_{k}": rows[:, k] for k in range(rows.shape[1])}


def render(
    outputs: np.ndarray, *, kind: str, classification: bool, names: list[str] | None = None
) -> bytes:
    """Return the bytes of the predictions file in format ``kind`` (see :func:`output_kind`).

    ``npy`` holds the classes (classification) or the values; CSV and JSON hold every column
    of :func:`table`, after a ``file`` column for images.
    """
    columns = table(outputs, classification=classification)
    if kind == "npy":
        buffer = io.BytesIO()
        np.save(buffer, columns["class"] if classification else outputs, allow_pickle=False)
        return buffer.getvalue()
    if names is not None:
        columns = {"file": np.array(names, dtype=object), **columns}
    if kind == "json":
        rows = [{k: _scalar(v[i]) for k, v in columns.items()} for i in range(len(outputs))]
        return (json.dumps(rows, indent=1) + "\n").encode()
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for i in range(len(outputs)):
        writer.writerow(_cell(v[i]) for v in columns.values())
    return text.getvalue().encode()


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _cell(value: Any) -> str:
    value = _scalar(value)
    return repr(value) if isinstance(value, float) else str(value)
