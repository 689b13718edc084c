"""What the benchmarks share: aligned tables and ``RESULT`` lines."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    """One RESULT line."""

    name: str
    value: float | None
    fmt: str
    target: str
    ok: bool

    def line(self) -> str:
        """Return ``RESULT name=value (target ...) PASS/FAIL``."""
        shown = "error" if self.value is None else format(self.value, self.fmt)
        return f"RESULT {self.name}={shown} (target {self.target}) {'PASS' if self.ok else 'FAIL'}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print ``rows`` under ``headers``, the first column left-aligned, the rest right."""
    cells = [[str(h) for h in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print("\n" + textwrap.fill(f"== {title}", 99, subsequent_indent="   "))
    for n, row in enumerate(cells):
        parts = [c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print(("  " + "  ".join(parts)).rstrip())
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def ratio(a: float, b: float) -> float:
    """``a / b``, or NaN when ``b`` is zero or either is NaN."""
    return a / b if b and not (math.isnan(a) or math.isnan(b)) else math.nan
