"""What the benchmarks share: aligned tables, ``RESULT`` lines, stderr and thread control."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


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


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Point file descriptor 2 (inherited by spawned workers) at ``path`` for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_parts(title: str, parts: Sequence[str], run: Callable[[str, Path], list[Result]]) -> int:
    """Run each part in a scratch folder, print a header and the RESULT lines; return 0.

    Args:
        title: The benchmark's name, e.g. ``"bench_search (full)"``.
        parts: The names of the parts to run, in order.
        run: Runs one part in the given scratch folder and returns its results; an
            exception becomes a failed result (the other parts still run).
    """
    import optuna

    print(f"{title}: {', '.join(parts)}")
    print(
        f"  python {platform.python_version()}, torch {torch.__version__}, optuna "
        f"{optuna.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    results: list[Result] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"{title.split()[0]}_") as tmp:
        print(f"  files in {tmp}")
        for name in parts:
            t0 = time.perf_counter()
            try:
                results += run(name, Path(tmp) / name)
            except Exception:
                traceback.print_exc()
                results.append(Result(name, None, "", "runs without an error", False))
            print(
                f"  [{name}: {time.perf_counter() - t0:.1f} s, load average "
                f"{os.getloadavg()[0]:.2f}]",
                flush=True,
            )
    print(f"\n{title.split()[0]} done in {time.perf_counter() - started:.1f} s")
    for result in results:
        print(result.line())
    return 0
