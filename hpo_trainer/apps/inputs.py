"""Inputs and outputs of ``hpo-trainer predict``: arrays read from files or image folders,
and predictions written as CSV, JSON or ``.npy``.

Inputs: ``.npy``, ``.npz`` (its one array, or the one named by ``key``), ``.pt`` (a tensor,
loaded with ``weights_only=True``), ``.csv`` (numeric columns, an optional header row; UTF-8,
with or without a BOM), or a folder of images read through an evaluation transform. Every
example read is one row out, in order: missing cells, NaN, infinities, text and complex
numbers are refused, naming where they are. Outputs are written atomically, so an error
leaves nothing behind.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpo_trainer.apps.csvinput import read_csv
from hpo_trainer.base.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: The input files ``predict`` reads, by suffix.
INPUT_SUFFIXES = (".npy", ".npz", ".pt", ".csv")
#: The output files ``predict`` writes, by suffix.
OUTPUT_SUFFIXES = (".csv", ".json", ".npy")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


#: How many bad rows an error message names.
_SHOWN = 5


def read_input(
    path: str | os.PathLike[str],
    *,
    key: str | None = None,
    transform: Callable[[Any], Any] | None = None,
    header: bool | None = None,
) -> tuple[torch.Tensor, list[str] | None]:
    """Read the examples to predict, one per row (or per image).

    Args:
        path: A ``.npy``, ``.npz``, ``.pt`` or ``.csv`` file, or a folder of images.
        key: The array of an ``.npz`` file that holds several.
        transform: Turns one PIL image into a tensor (image folders only).
        header: Whether the first row of a ``.csv`` file is a header (``True``) or data
            (``False``). ``None`` decides: a first row with a text cell is a header, and so
            is one of the column numbers (``0,1,...,n-1`` or ``1,...,n``, as
            ``pandas.DataFrame(x).to_csv(index=False)`` writes) above more rows.

    Returns:
        The examples as one tensor, and the image files' paths relative to the folder
        (``None`` for an array file).

    Raises:
        ConfigError: If the path is missing or of a kind that cannot be read, or
            ``header`` is given for an input that is not a ``.csv`` file.
        DataError: If the file cannot be read, holds no numeric examples, has missing
            cells, or holds NaN or infinite values.

    """
    path = Path(path)
    if path.is_dir():
        _no_header(path, header)
        images, names = _read_images(path, transform)
        return as_examples(images, f"input {str(path)!r}", names), names
    if not path.is_file():
        raise ConfigError(
            f"input {str(path)!r} does not exist; give a {', '.join(INPUT_SUFFIXES)} file or "
            "a folder of images"
        )
    suffix = path.suffix.lower()
    readers: dict[str, Callable[[], Any]] = {
        ".npy": lambda: _read_npy(path, key),
        ".npz": lambda: _read_npz(path, key),
        ".pt": lambda: _read_pt(path, key),
        ".csv": lambda: read_csv(path, header),
    }
    if suffix not in readers:
        raise ConfigError(
            f"input {str(path)!r} must end in one of {', '.join(INPUT_SUFFIXES)} or be a "
            f"folder of images, got {suffix or 'no suffix'!r}"
        )
    if suffix != ".csv":
        _no_header(path, header)
    try:
        array = readers[suffix]()
    except (DataError, ConfigError):
        raise
    except Exception as exc:  # numpy and torch raise many kinds for a bad file
        if isinstance(exc, ValueError) and "allow_pickle" in str(exc):
            raise DataError(
                f"input {str(path)!r} must hold a numeric array, but it holds Python objects "
                "(an object array), which are not loaded because loading them could run "
                "code; save numbers instead, e.g. np.save(path, x.astype(np.float32))"
            ) from None
        raise DataError(
            f"input {str(path)!r} cannot be read: {type(exc).__name__}: {exc}"
        ) from exc
    return as_examples(array, f"input {str(path)!r}"), None


def _no_header(path: Path, header: bool | None) -> None:
    """Refuse ``header`` for an input that has no header row to read or skip."""
    if header is not None:
        raise ConfigError(
            f"header={header} applies to .csv inputs only, but {str(path)!r} is not a .csv "
            "file; leave header unset for it"
        )


#: The tensor types a model is fed (others, such as float8, are refused with a fix).
_DTYPES = frozenset(
    {
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
    }
)


def as_examples(array: Any, what: str, names: list[str] | None = None) -> torch.Tensor:
    """Return ``array`` as a tensor of examples, refusing what a model cannot predict.

    Args:
        array: A tensor or anything numpy reads as an array, one example per row.
        what: Names the examples in messages, e.g. ``"input 'x.npy'"``.
        names: The image files the rows came from, if any.

    Raises:
        DataError: If the examples are not real numbers, are empty or are not finite.

    """
    if not isinstance(array, torch.Tensor):
        array = np.asarray(array)
        if array.dtype.kind not in "biuf":
            raise DataError(_dtype_problem(what, array.dtype.kind, str(array.dtype)))
        try:
            array = torch.as_tensor(array)
        except (TypeError, RuntimeError) as exc:  # a numeric dtype torch does not have
            raise DataError(
                f"{what} must hold numbers torch can read, got dtype "
                f"{array.dtype} ({exc}); convert it, e.g. x.astype(np.float32)"
            ) from None
    tensor = array
    if tensor.layout != torch.strided or tensor.device.type == "meta":
        raise DataError(
            f"{what} must be a dense tensor of numbers, got a {tensor.layout} tensor on "
            f"{tensor.device}; convert it, e.g. x.to_dense().cpu()"
        )
    if tensor.dtype not in _DTYPES and not (tensor.dtype == torch.bool or tensor.is_complex()):
        raise DataError(
            f"{what} must hold float or integer numbers, got dtype {tensor.dtype}; convert "
            "it, e.g. x.float()"
        )
    if tensor.dtype == torch.bool or tensor.is_complex():
        kind = "b" if tensor.dtype == torch.bool else "c"
        raise DataError(_dtype_problem(what, kind, str(tensor.dtype)))
    if tensor.dim() == 0 or len(tensor) == 0:
        raise DataError(
            f"{what} holds no examples (shape {tuple(tensor.shape)}); give one example per row"
        )
    check_finite(tensor, what, names)
    return tensor


def _dtype_problem(what: str, kind: str, dtype: str) -> str:
    """Return the error message for an input of a dtype that is not real numbers."""
    holds = {
        "U": "text",
        "S": "bytes (text)",
        "c": "complex numbers",
        "b": "booleans",
        "O": "Python objects",
        "V": "structured records",
        "M": "dates",
        "m": "time spans",
    }.get(kind, "values that are not numbers")
    fix = {
        "U": "convert the text to numbers first (e.g. x.astype(np.float32)), or drop text "
        "columns such as ids and labels",
        "S": "convert the text to numbers first (e.g. x.astype(np.float32))",
        "c": "give real numbers, e.g. x.real or abs(x), as float32",
        "V": "give one plain numeric array, e.g. np.stack([x[f] for f in x.dtype.names], 1)",
    }.get(kind, "convert it to numbers, e.g. x.astype(np.float32)")
    return f"{what} must hold real numbers, but it holds {holds} (dtype {dtype}); {fix}"


def check_finite(tensor: torch.Tensor, what: str, names: list[str] | None = None) -> None:
    """Refuse examples that hold NaN or an infinity: a model predicts nothing useful there.

    Raises:
        DataError: Naming how many examples hold them, and the first few.

    """
    if not tensor.is_floating_point():
        return
    bad = (~torch.isfinite(tensor)).reshape(len(tensor), -1).any(dim=1).nonzero().flatten()
    if len(bad) == 0:
        return
    first = bad[:_SHOWN].tolist()
    more = ", ..." if len(bad) > _SHOWN else ""
    if names is not None:
        where = "images " + ", ".join(repr(names[i]) for i in first)
        fix = "check the study's EVAL_TRANSFORM (e.g. a Normalize with a std of 0)"
    else:
        where = "examples (rows, counted from 0) " + ", ".join(map(str, first))
        fix = "fill them in (e.g. np.nan_to_num) or drop those examples first"
    raise DataError(
        f"{what} must hold finite numbers, but {len(bad)} of its {len(tensor)} "
        f"examples hold NaN or infinite values: {where}{more}; {fix}"
    )


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


def default_transform(gray: bool = False) -> Callable[[Any], torch.Tensor]:
    """Return the evaluation transform of a study file that names none.

    Args:
        gray: Convert to one grayscale channel (for a model of one-channel images); else
            the image is kept as it comes (image folders are read in RGB).

    Returns:
        A function from a PIL image to a float tensor (channels x height x width) in [0, 1].

    """
    from torchvision.transforms.functional import pil_to_tensor

    def transform(image: Any) -> torch.Tensor:
        return pil_to_tensor(image.convert("L") if gray else image).float() / 255.0

    return transform


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
        transform = default_transform()
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
