"""Benchmark the budget lock: how long one trial start holds the study-wide lock, how many
trial starts per second a fleet of 1 to 32 workers gets, and the storage work of one start, on
a PostgreSQL study filled with 10,000 and 100,000 finished trials (``--quick``: 2,000 trials,
1 and 8 workers, about a minute).

Each fleet is ``budget_lock_fleet.py``: lightweight workers (spawned processes that load the
trial-start path without PyTorch) that start trials through the product's start path (what
``run_worker`` calls), suggest three parameters (random sampler unless ``--sampler tpe``),
sleep ``--trial-ms`` instead of training and tell the trial, until the budget (the study's
finished trials plus the starts asked for) is reached; the benchmark then checks the budget
was reached exactly. With ``--before TREE`` the same fleets also run on TREE, another
checkout of the package (``git archive c3db9d5 hpo_trainer | tar -x -C TREE``: the start
path before the change, ``study.ask()`` under the lock), as threads (that tree's start path
loads PyTorch), and the two are printed side by side.

The studies are filled in SQL (``_shared.fill_study``: 100 trials through Optuna, then
copies), and deleted afterwards unless ``--keep`` (then reused by the next run, named
``bench_budget_lock_<size>``).

Run: .venv/bin/python benchmarks/bench_budget_lock.py [--quick] [--keep] [--before TREE]
[--pg-url URL] [--sampler random|tpe] [--trial-ms MS]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _shared as sh  # noqa: E402

FLEET = HERE / "budget_lock_fleet.py"
HOLD_TARGET_MS = 10.0  # p95 of the lock hold per start, at the largest study, one worker
EPOCHS = 10  # reports per filled trial
PLANS = {  # sizes; workers after; workers before, by size; starts per worker (at least 60)
    "full": ([10_000, 100_000], [1, 4, 8, 16, 32], {10_000: [1, 4, 8], 100_000: [1]}, 10),
    "quick": ([2_000], [1, 8], {2_000: [1, 8]}, 8),
}


def _sql(url: str, statement: str, **params: Any) -> Any:
    """Run one statement on its own connection (the benchmark's own bookkeeping)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return result.scalar() if result.returns_rows else None
    finally:
        engine.dispose()


def _finished(url: str, name: str) -> tuple[int, int]:
    """Finished and unfinished (running or waiting) trials of study ``name``."""
    counts = [
        _sql(
            url,
            "SELECT count(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
            f"WHERE s.study_name = :name AND t.state IN {states}",
            name=name,
        )
        for states in ("('COMPLETE', 'PRUNED')", "('RUNNING', 'WAITING')")
    ]
    return counts[0], counts[1]


def fill(url: str, name: str, size: int, tmp: Path) -> float:
    """Create study ``name`` with ``size`` finished trials; return the seconds it took."""
    started = time.perf_counter()
    dists = {
        "optimizer.lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
        "model.hidden": optuna.distributions.IntDistribution(8, 256),
        "optimizer.momentum": optuna.distributions.FloatDistribution(0.0, 0.99),
    }
    storage = sh.open_storage(url)
    study = optuna.create_study(study_name=name, storage=storage)
    sh.fill_study(study, url, sh.finished_trials(dists, 100, EPOCHS, tmp), size)
    sh.dispose(storage)
    _sql(url, "ANALYZE")
    return time.perf_counter() - started


def drop(url: str, name: str) -> None:
    """Delete study ``name`` in SQL (Optuna's delete loads every trial first)."""
    engine = sa.create_engine(url)
    try:
        tables = sa.inspect(engine).get_table_names()
        with engine.begin() as conn:
            sid = conn.execute(
                sa.text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": name}
            ).scalar()
            if sid is None:
                return
            for table in tables:
                cols = {c["name"] for c in sa.inspect(engine).get_columns(table)}
                if "trial_id" in cols and table != "trials":
                    conn.execute(
                        sa.text(
                            f'DELETE FROM "{table}" WHERE trial_id IN '
                            "(SELECT trial_id FROM trials WHERE study_id = :sid)"
                        ),
                        {"sid": sid},
                    )
            conn.execute(sa.text("DELETE FROM trials WHERE study_id = :sid"), {"sid": sid})
            for table in tables:
                cols = {c["name"] for c in sa.inspect(engine).get_columns(table)}
                if "study_id" in cols and table not in ("trials", "studies"):
                    conn.execute(
                        sa.text(f'DELETE FROM "{table}" WHERE study_id = :sid'), {"sid": sid}
                    )
            conn.execute(sa.text("DELETE FROM studies WHERE study_id = :sid"), {"sid": sid})
    finally:
        engine.dispose()


def study_for(args: argparse.Namespace, size: int, tmp: Path) -> tuple[str, str]:
    """The study of ``size`` trials to run fleets on, and how it came to be."""
    if not args.keep:
        name = f"bench_budget_lock_{size}_{uuid.uuid4().hex[:8]}"
        return name, f"filled in {fill(args.pg_url, name, size, tmp):.0f} s"
    name = f"bench_budget_lock_{size}"
    done, _ = _finished(args.pg_url, name)
    if done >= size:
        return name, f"kept from an earlier run ({done} finished trials)"
    drop(args.pg_url, name)
    return name, f"filled in {fill(args.pg_url, name, size, tmp):.0f} s (kept)"


def run_fleet(
    args: argparse.Namespace, name: str, workers: int, tree: str | None, tmp: Path
) -> dict[str, Any]:
    """Run one fleet on study ``name``; return its summary (see :func:`summarise`)."""
    done, left = _finished(args.pg_url, name)
    if left:  # a fleet killed earlier left trials running: they would take budget
        _sql(
            args.pg_url,
            "UPDATE trials SET state = 'FAIL' WHERE state IN ('RUNNING', 'WAITING') AND "
            "study_id = (SELECT study_id FROM studies WHERE study_name = :name)",
            name=name,
        )
    starts = max(60, args.per_worker * workers)  # 60 at least: percentiles of one worker
    spec = {
        "url": args.pg_url,
        "study": name,
        "n_trials": done + starts,
        "workers": workers,
        "mode": "threads" if tree else args.mode,
        "trial_ms": args.trial_ms,
        "sampler": args.sampler,
        "tree": tree,
        "out": str(tmp / f"fleet-{uuid.uuid4().hex[:8]}.json"),
    }
    path = tmp / "spec.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, str(FLEET), str(path)], capture_output=True, text=True, timeout=1800
    )
    if proc.returncode:
        raise RuntimeError(f"fleet failed: {proc.stdout[-2000:]}{proc.stderr[-4000:]}")
    after, left = _finished(args.pg_url, name)
    figures = summarise(json.loads(Path(spec["out"]).read_text()))
    figures["budget_error"] = abs(after - spec["n_trials"]) + left
    return figures


def _pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, NaN of none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _cpu(out: dict[str, Any]) -> float:
    """The workers' CPU seconds during the fleet (threads share one process's clock)."""
    seconds = [w["cpu_s"] for w in out["workers"]]
    return max(seconds) if out["spec"]["mode"] == "threads" else sum(seconds)


def summarise(out: dict[str, Any]) -> dict[str, Any]:
    """A fleet's figures: starts, starts/s, lock hold, lock busy, storage work, first read."""
    looks = [r for w in out["workers"] for r in w["records"]]
    starts = [r for r in looks if r["kind"] == "start"]
    end = max((r["at"] + r["s"] for r in starts), default=out["go"])
    window = max(end - out["go"], 1e-9)
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    return {
        "engine": out["engine"],
        "starts": len(starts),
        "idle": sum(r["kind"] == "idle" for r in looks),
        "per_s": len(starts) / window,
        "hold_p50": 1e3 * _pct([r["held"] for r in starts], 50),
        "hold_p95": 1e3 * _pct([r["held"] for r in starts], 95),
        "hold_max": 1e3 * _pct([r["held"] for r in starts], 100),
        "busy": sum(r["held"] for r in looks if r["at"] < end) / window,
        "start_p50": 1e3 * _pct([r["s"] for r in starts], 50),
        "stmts_in": med([r["in_lock"][0] for r in starts]),
        "rows_in": med([r["in_lock"][1] for r in starts]),
        "stmts_start": med([r["start"][0] for r in starts]),
        "rows_start": med([r["start"][1] for r in starts]),
        "first_read": med([w["first_read_s"] for w in out["workers"]]),
        "ready": out["ready_s"],
        "machine_busy": out["machine_busy"],
        "cpu_per_start": 1e3 * _cpu(out) / max(len(starts), 1),
    }


COLUMNS = (  # header, key, format
    ("starts", "starts", "d"),
    ("starts/s", "per_s", ".1f"),
    ("hold p50 ms", "hold_p50", ".1f"),
    ("hold p95 ms", "hold_p95", ".1f"),
    ("hold max ms", "hold_max", ".0f"),
    ("lock busy", "busy", ".0%"),
    ("start p50 ms", "start_p50", ".1f"),
    ("SQL in lock", "stmts_in", ".0f"),
    ("rows in lock", "rows_in", ".0f"),
    ("SQL per start", "stmts_start", ".0f"),
    ("rows per start", "rows_start", ".0f"),
    ("first read s", "first_read", ".2f"),
    ("CPU busy", "machine_busy", ".0%"),
    ("worker CPU ms/start", "cpu_per_start", ".1f"),
    ("budget error", "budget_error", "d"),
)


def print_cells(cells: dict[tuple[str, int, int], dict[str, Any]], note: str) -> None:
    """One row per fleet (size, workers, tree), before and after next to each other."""
    rows = [
        [f"{size:,}", workers, tree] + [sh.fmt(f[key], spec) for _, key, spec in COLUMNS]
        for (tree, size, workers), f in sorted(cells.items(), key=lambda c: (c[0][1], c[0][2]))
    ]
    sh.print_table(
        "budget lock, per fleet: hold = seconds the budget lock is held per trial start "
        "(measured around the product's lock); lock busy = the hold of all looks begun in "
        "the fleet's window (release to last start) / the window; SQL and rows (PostgreSQL "
        "rowcount of SELECTs): "
        "medians per start, in the lock and for the whole start; first read = a fresh "
        f"worker's first look at the study (after: outside the lock; before: under it); CPU "
        "busy = the machine's (PostgreSQL included) from the fleet's start to its end; worker "
        f"CPU = the workers' own per trial start, its trial's suggests and tell included; {note}",
        ["trials", "workers", "tree", *(h for h, _, _ in COLUMNS)],
        rows,
    )


def print_side_by_side(cells: dict[tuple[str, int, int], dict[str, Any]]) -> None:
    """Before and after of each fleet run on both trees, with the ratio."""
    rows = []
    for (tree, size, workers), after in sorted(cells.items(), key=lambda c: c[0][1:]):
        before = cells.get(("before", size, workers))
        if tree != "after" or before is None:
            continue
        row: list[Any] = [f"{size:,}", workers]
        for key, spec in (("per_s", ".1f"), ("hold_p50", ".1f"), ("hold_p95", ".1f")):
            ratio = sh.ratio(after[key], before[key])
            row += [sh.fmt(before[key], spec), sh.fmt(after[key], spec), sh.fmt(ratio, ".2f")]
        rows.append(
            row + [sh.fmt(before["first_read"], ".2f"), sh.fmt(after["first_read"], ".2f")]
        )
    if rows:
        pairs = ("starts/s", "hold p50 ms", "hold p95 ms")
        headers = [f"{h} {w}" for h in pairs for w in ("before", "after", "after/before")]
        sh.print_table(
            "before / after, side by side (before: study.ask() under the lock)",
            ["trials", "workers", *headers, "first read s before", "after"],
            rows,
        )


def results(cells: dict[tuple[str, int, int], dict[str, Any]], sizes: list[int]) -> list[str]:
    """The RESULT lines: the hold of one start at the largest study (alone: the start path's
    own cost; in the largest fleet: with the machine's CPU shared), growth with workers, rows
    read under the lock by study size, and an exact budget in every fleet."""
    after = {(s, w): f for (t, s, w), f in cells.items() if t == "after"}
    large, small = max(sizes), min(sizes)
    workers = sorted(w for s, w in after if s == large)
    alone, fleet = after[large, workers[0]], after[large, workers[-1]]
    target = f"<= {HOLD_TARGET_MS:g}, {workers[0]} worker"
    lines = [
        sh.result(
            f"hold_p95_ms_at_{large}_{workers[0]}w",
            alone["hold_p95"],
            ".1f",
            target,
            alone["hold_p95"] <= HOLD_TARGET_MS,
        ),
        sh.result(
            f"hold_p50_ms_at_{large}_{workers[-1]}w",
            fleet["hold_p50"],
            ".1f",
            f"none: CPU busy {fleet['machine_busy']:.0%}, lock busy {fleet['busy']:.0%}",
        ),
    ]
    rates = [after[large, w]["per_s"] for w in workers]
    grows = all(b > a for a, b in zip(rates, rates[1:3]))  # at least up to the third fleet
    lines.append(
        sh.result(
            f"starts_per_s_at_{large}_{workers[-1]}w_over_{workers[0]}w",
            sh.ratio(rates[-1], rates[0]),
            ".1f",
            "> 1, growing with workers",
            grows and rates[-1] > rates[0],
        )
    )
    if large != small:
        rows = sh.ratio(after[large, 1]["rows_in"] + 1, after[small, 1]["rows_in"] + 1)
        name = f"rows_in_lock_{large}_over_{small}"
        lines.append(sh.result(name, rows, ".2f", "<= 1.5", rows <= 1.5))
    errors = sum(f["budget_error"] for f in cells.values())
    target = f"0, over {len(cells)} fleets"
    lines.append(sh.result("budget_errors", errors, "d", target, not errors))
    return lines


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 trials, 1 and 8 workers")
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the studies")
    parser.add_argument("--before", metavar="TREE", help="also run TREE's start path")
    parser.add_argument("--pg-url", default=os.environ.get("HPO_BENCH_PG_URL", sh.PG_URL))
    parser.add_argument("--sampler", choices=("random", "tpe"), default="random")
    parser.add_argument("--trial-ms", type=float, default=200.0, help="a trial's sleep")
    parser.add_argument("--workers", type=int, nargs="+", help="fleet sizes (after)")
    parser.add_argument("--sizes", type=int, nargs="+", help="finished trials in the study")
    parser.add_argument("--per-worker", type=int, help="starts per worker in a fleet")
    parser.add_argument(
        "--mode", choices=("processes", "threads"), default="processes", help="after's workers"
    )
    return parser.parse_args()


def main() -> int:
    args = parse()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sizes, plan, before_plan, per_worker = PLANS["quick" if args.quick else "full"]
    sizes, plan = args.sizes or sizes, args.workers or plan
    args.per_worker = args.per_worker or per_worker
    print(f"bench_budget_lock ({'quick' if args.quick else 'full'}): {os.cpu_count()} CPUs,")
    print(f"  optuna {optuna.__version__}, load average {os.getloadavg()[0]:.2f}, {args.pg_url}")
    cells: dict[tuple[str, int, int], dict[str, Any]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_budget_lock_") as tmp:
        for size in sizes:
            name, how = study_for(args, size, Path(tmp))
            print(f"  study of {size:,} trials: {how}", flush=True)
            try:
                runs = [("after", w, None) for w in plan]
                if args.before:
                    runs += [("before", w, args.before) for w in before_plan.get(size, [1])]
                for tree, workers, path in runs:
                    cells[tree, size, workers] = run_fleet(args, name, workers, path, Path(tmp))
                    f = cells[tree, size, workers]
                    print(
                        f"  [{tree} {workers} w: {f['per_s']:.1f} starts/s, hold p50 "
                        f"{f['hold_p50']:.1f} ms, load {os.getloadavg()[0]:.2f}]",
                        flush=True,
                    )
            finally:
                if not args.keep:
                    drop(args.pg_url, name)
    note = f"trials sleep {args.trial_ms:g} ms, {args.sampler} sampler, after's workers are "
    note += f"{args.mode}, before's threads"
    print_cells(cells, note)
    print_side_by_side(cells)
    print(f"\nbench_budget_lock done in {time.perf_counter() - started:.0f} s")
    print("\n".join(results(cells, sizes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
