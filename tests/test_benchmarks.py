"""The benchmarks keep working: each runs in its quick mode and prints its RESULT lines.

The figures are not judged here (timed tests on a shared machine would be flaky); the
README's Performance section quotes full runs.
"""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(
    "args",
    [
        ["bench_loop.py", "--quick"],
        ["bench_search.py", "--quick", "--only", "storage"],
        # SQLite only: PostgreSQL doubles the time and is covered by tests/test_scaleout.py
        ["bench_scaleout.py", "--quick", "--only", "overhead", "--pg-url", "none"],
    ],
)
def test_benchmark_runs_and_reports(args):
    out = subprocess.run(
        [sys.executable, BENCH / args[0], *args[1:]], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert results, out.stdout[-2000:]
    broken = [line for line in results if "=error" in line and "skipped" not in line]
    assert not broken, "\n".join(results)
