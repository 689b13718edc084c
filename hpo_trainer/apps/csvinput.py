"""CSV inputs of ``hpo-trainer predict``: numeric columns, read exactly, one example per row.

UTF-8 with or without a BOM. The first row is a header when it holds names only (an index
column's may be empty), or the column numbers ``0,1,...`` that pandas writes (three or more
columns); a first row that mixes numbers and text, or a short row of column numbers, is
refused rather than guessed (``header`` says which it is). Missing cells, text, and values
that are not finite in float32 are refused, naming their rows and columns, so that every
row in is one row out.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from hpo_trainer.base.errors import DataError

logger = logging.getLogger(__name__)

#: Cells that mean "no value" (pandas' defaults), compared without case or spaces around.
MISSING_CELLS = frozenset(
    {"", "na", "n/a", "nan", "-nan", "+nan", "null", "none", "nil", "<na>", "nat", "#n/a"}
    | {"#n/a n/a", "#na", "-1.#ind", "-1.#qnan", "1.#ind", "1.#qnan"}
)
#: How many bad rows or cells an error message names.
_SHOWN = 5

_Row = tuple[int, list[str]]


def read_csv(path: Path, header: bool | None) -> np.ndarray:
    """Read a CSV file of numbers, one example per row, as float32.

    Args:
        path: The file.
        header: Whether the first row is a header (``None``: decide from the row).

    Raises:
        DataError: Naming the rows and columns of missing, non-numeric or non-finite
            cells, rows of other widths, or a first row that could be either.

    """
    rows = _csv_rows(path)
    if not rows:
        raise DataError(f"input {str(path)!r} holds no rows; give one example per row")
    names = rows[0][1] if _has_header([r for _, r in rows], header, path) else None
    data = rows[1:] if names is not None else rows
    if not data:
        raise DataError(
            f"input {str(path)!r} holds a header row but no examples; give one example per "
            "row below it"
        )
    _check_widths(path, data, names)
    _check_cells(path, data, names, header)
    values = np.array([[float(c) for c in r] for _, r in data], dtype=np.float64)
    with np.errstate(over="ignore"):
        values = values.astype(np.float32)
    _check_csv_finite(path, data, names, values)
    return values.reshape(len(data), -1)


def _csv_rows(path: Path) -> list[_Row]:
    """Return the rows that hold anything, with the line each starts on (a BOM is dropped)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"input {str(path)!r} must be UTF-8 text, but byte {exc.start} is not; save it "
            "as UTF-8 (CSV UTF-8 in a spreadsheet)"
        ) from None
    reader = csv.reader(io.StringIO(text))
    rows: list[_Row] = []
    last = 0
    for row in reader:
        if any(c.strip() for c in row):
            rows.append((last + 1, row))
        last = reader.line_num
    return rows


def _kind(cell: str) -> str:
    """Return what a CSV cell holds: ``missing``, ``number`` or ``text``."""
    text = cell.strip()
    if text.lower() in MISSING_CELLS:
        return "missing"
    if "_" in text:  # Python's float() reads "1_0" as 10: not a number in a CSV
        return "text"
    try:
        float(text)
    except ValueError:
        return "text"
    return "number"


def _has_header(rows: list[list[str]], header: bool | None, path: Path) -> bool:
    """Return whether the first row is a header (see :func:`read_input`'s ``header``)."""
    if header is not None:
        return header
    first = rows[0]
    kinds = {_kind(c) for c in first}
    if "text" in kinds and "number" not in kinds:  # names (an index column's may be empty)
        return True
    if "text" in kinds and "number" in kinds:  # half a header, or a data row with a typo
        raise DataError(
            f"input {str(path)!r} starts with the row {_short_row(first)!r}, which mixes "
            "numbers and text: it is neither a header (names only) nor an example (numbers "
            "only); fix the row, or say which it is with header=True or header=False "
            "(--header yes / --header no)"
        )
    if len(rows) < 2 or not _column_numbers(first):
        return False
    if len(first) < 3:  # "0,1" or "1" is as likely a first example as a header
        raise DataError(
            f"input {str(path)!r} starts with the row {','.join(first)!r}, which may be a "
            "header (the column numbers) or a first example; say which with header=True or "
            "header=False (--header yes / --header no)"
        )
    logger.info("%s: line 1 holds the column numbers; it is read as a header", path)
    return True


def _short_row(row: list[str]) -> str:
    text = ",".join(row)
    return text if len(text) <= 60 else text[:57] + "..."


def _column_numbers(row: list[str]) -> bool:
    """Return whether ``row`` is ``0,1,...,n-1`` or ``1,...,n`` written as integers."""
    cells = [c.strip() for c in row]
    if not all(c.isascii() and c.isdigit() for c in cells):
        return False
    numbers = [int(c) for c in cells]
    return numbers in (list(range(len(row))), list(range(1, len(row) + 1)))


def _where(
    index: int, line: int, column: int | None = None, names: list[str] | None = None
) -> str:
    """Return where a cell is, for a message: ``data row 3 (line 4), column 2 ('b')``."""
    place = f"data row {index + 1} (line {line})"
    if column is None:
        return place
    name = f" ({names[column].strip()!r})" if names is not None else ""
    return f"{place}, column {column + 1}{name}"


def _listed(places: list[str]) -> str:
    """Return the first few of ``places`` joined, with ``...`` if there are more."""
    return "; ".join(places[:_SHOWN]) + ("; ..." if len(places) > _SHOWN else "")


def _check_widths(path: Path, data: list[_Row], names: list[str] | None) -> None:
    """Refuse rows of different lengths: their columns would not line up."""
    width = len(names) if names is not None else len(data[0][1])
    odd = [(i, line, row) for i, (line, row) in enumerate(data) if len(row) != width]
    if not odd:
        return
    against = "the header (line 1)" if names is not None else _where(0, data[0][0])
    places = [f"{_where(i, line)} has {len(row)}" for i, line, row in odd]
    widths = sorted({width, *(len(row) for _, _, row in odd)})
    raise DataError(
        f"input {str(path)!r} must have the same number of columns in every row, got "
        f"{widths}: {against} has {width}, but {_listed(places)}; fix those rows"
    )


def _check_cells(
    path: Path, data: list[_Row], names: list[str] | None, header: bool | None
) -> None:
    """Refuse missing and text cells, naming where they are."""
    missing: list[str] = []
    text: list[str] = []
    for i, (line, row) in enumerate(data):
        for j, cell in enumerate(row):
            kind = _kind(cell)
            if kind != "number":
                where = _where(i, line, j, names)
                (missing if kind == "missing" else text).append(f"{where}: {cell.strip()!r}")
    if missing:
        hint = (
            "; if line 1 is a header, say so with header=True (--header yes)"
            if header is None and names is None and missing[0].startswith("data row 1 ")
            else ""
        )
        raise DataError(
            f"input {str(path)!r} must have a number in every cell, but {len(missing)} "
            f"cell(s) are missing (empty, NA, NaN, null, ...): {_listed(missing)}; fill them "
            f"in or drop those rows first{hint}"
        )
    if text:
        hint = (
            "; line 1 looks like a header: pass header=True (--header yes) or leave it unset"
            if header is False and text[0].startswith("data row 1 ")
            else ""
        )
        raise DataError(
            f"input {str(path)!r} must hold numeric columns only, but {len(text)} cell(s) "
            f"hold text: {_listed(text)}; remove text columns (ids, labels) first{hint}"
        )


def _check_csv_finite(
    path: Path, data: list[_Row], names: list[str] | None, values: np.ndarray
) -> None:
    """Refuse cells that are infinite, or too large for float32, naming where they are."""
    bad = np.argwhere(~np.isfinite(values))
    if len(bad) == 0:
        return
    places = [
        f"{_where(int(i), data[int(i)][0], int(j), names)}: {data[int(i)][1][int(j)].strip()!r}"
        for i, j in bad[:_SHOWN]
    ]
    raise DataError(
        f"input {str(path)!r} must hold finite numbers (within float32's range, about "
        f"3.4e38), but {len(bad)} cell(s) are not: {_listed(places)}"
        f"{'; ...' if len(bad) > _SHOWN else ''}; replace them or drop those rows first"
    )
