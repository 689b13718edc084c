"""What the benchmarks share: the command line, timing, summaries of searches, studies filled
with finished trials, tables and ``RESULT`` lines. One copy of each; the benchmarks measure
hpo-trainer only through its public phases."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import textwrap
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


# -- numbers, tables and RESULT lines -------------------------------------------------------


@dataclass
class Result:
    """One ``RESULT name=value (target ...) PASS/FAIL`` line; ``value=None`` prints error."""

    name: str
    value: float | None
    fmt: str
    target: str = "none, for reference"
    ok: bool = True

    def line(self) -> str:
        """Return the RESULT line."""
        shown = "error" if self.value is None else format(self.value, self.fmt)
        return f"RESULT {self.name}={shown} (target {self.target}) {'PASS' if self.ok else 'FAIL'}"


def ratio(a: float, b: float) -> float:
    """``a / b``, or NaN when ``b`` is zero or either is NaN."""
    return a / b if b and not (math.isnan(a) or math.isnan(b)) else math.nan


def median(values: Sequence[float] | Iterator[float]) -> float:
    """The median, NaN of nothing."""
    values = list(values)
    return statistics.median(values) if values else math.nan


def fmt(value: float | None, spec: str = ".1f") -> str:
    """Format a number, ``-`` for None or NaN."""
    return "-" if value is None or math.isnan(value) else format(value, spec)


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


# -- timing ---------------------------------------------------------------------------------


@dataclass
class Clock:
    """The wall seconds of a block and the local times it began and ended (Optuna stamps
    trials with the naive local ``datetime.now()``)."""

    began: datetime.datetime = field(default_factory=datetime.datetime.now)
    ended: datetime.datetime | None = None
    wall: float = math.nan


@contextlib.contextmanager
def clock() -> Iterator[Clock]:
    """Time the block."""
    c = Clock()
    started = time.perf_counter()
    try:
        yield c
    finally:
        c.wall = time.perf_counter() - started
        c.ended = datetime.datetime.now()


def interleaved(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Time each variant ``repeats`` times, rotating their order every round.

    Every variant runs once untimed first (imports, allocator and thread-pool warm-up).
    """
    for fn in variants.values():
        fn()
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            started = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - started)
    return times


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


# -- what a search did, read from its trials ------------------------------------------------


@dataclass
class SearchRun:
    """A finished search as its trials' time stamps tell it.

    ``steady`` leaves out the first trial of each of ``procs`` processes: it also pays
    one-off costs (the first optimizer of a process imports ``torch._dynamo``, ~1 s).
    """

    wall: float = math.nan  # the whole call
    span: float = math.nan  # first trial start to last trial end
    head: float = math.nan  # call start to first trial start
    tail: float = math.nan  # last trial end to call end
    trials: int = 0  # finished (complete or pruned)
    failed: int = 0
    left: int = 0  # RUNNING or WAITING
    epochs: int = 0
    steady: list[float] = field(default_factory=list)  # seconds per steady trial
    steady_epochs: int = 0
    best: float = math.nan
    params: list[dict[str, Any]] = field(default_factory=list)  # by trial number
    per_worker: dict[Any, int] = field(default_factory=dict)

    @property
    def median_trial(self) -> float:
        """Seconds of the median steady trial."""
        return median(self.steady)

    @property
    def ms_per_epoch(self) -> float:
        """Milliseconds inside steady trials per epoch they trained."""
        return ratio(1e3 * sum(self.steady), self.steady_epochs)


def summarise(trials: Sequence[FrozenTrial], c: Clock, procs: int) -> SearchRun:
    """Summarise the trials of a search timed by ``c`` that ran in ``procs`` processes."""
    done = sorted(
        (t for t in trials if t.state in DONE and t.datetime_start and t.datetime_complete),
        key=lambda t: t.datetime_start,  # type: ignore[arg-type,return-value]
    )
    run = SearchRun(wall=c.wall, trials=len(done))
    run.failed = sum(t.state == TrialState.FAIL for t in trials)
    run.left = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    if done:
        first, last = done[0].datetime_start, max(t.datetime_complete for t in done)
        run.span = (last - first).total_seconds()  # type: ignore[operator]
        run.head = (first - c.began).total_seconds()  # type: ignore[operator]
        run.tail = (c.ended - last).total_seconds() if c.ended else math.nan
    run.epochs = sum(len(t.intermediate_values) for t in done)
    run.steady = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done[procs:]]  # type: ignore[operator]
    run.steady_epochs = sum(len(t.intermediate_values) for t in done[procs:])
    values = [t.value for t in done if t.state == TrialState.COMPLETE and t.value is not None]
    run.best = min(values) if values else math.nan
    run.params = [t.params for t in sorted(done, key=lambda t: t.number)]
    for t in done:
        run.per_worker[t.user_attrs.get("worker")] = (
            run.per_worker.get(t.user_attrs.get("worker"), 0) + 1
        )
    return run


def read_trials(url: str, name: str) -> list[FrozenTrial]:
    """Every trial of study ``name`` at ``url``, read through hpo-trainer's ``open_storage``."""
    from hpo_trainer.search.storage import open_storage

    storage = open_storage(url, heartbeat_interval=None)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finally:
        dispose(storage)


def dispose(storage: Any) -> None:
    """Release a storage's database connections, if it has any."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


# -- studies filled with finished trials ----------------------------------------------------


def curve(rng: random.Random, epochs: int) -> dict[int, float]:
    """A plausible validation-loss curve: a noisy decay from ~2.3 to a floor."""
    start, floor = rng.uniform(1.8, 2.4), rng.uniform(0.08, 1.2)
    return {
        s: floor + (start - floor) * math.exp(-s / 4) + rng.gauss(0, 0.01)
        for s in range(1, epochs + 1)
    }


def finished_trials(
    dists: dict[str, Any], n: int, epochs: int, folder: Path, seed: int = 0
) -> list[FrozenTrial]:
    """``n`` finished trials as a search leaves them: params of ``dists``, hpo-trainer's
    user attributes, a curve of ``epochs`` values and its best as the value."""
    rng = random.Random(seed)
    trials = []
    for i in range(n):
        params: dict[str, Any] = {}
        for name, d in dists.items():
            if isinstance(d, optuna.distributions.CategoricalDistribution):
                params[name] = rng.choice(d.choices)
            elif getattr(d, "log", False):
                params[name] = math.exp(rng.uniform(math.log(d.low), math.log(d.high)))
            else:
                params[name] = rng.uniform(d.low, d.high)
        values = curve(rng, epochs)
        best = min(values, key=lambda s: values[s])
        attrs = {"worker": i % 4, "host": platform.node(), "device": "cpu", "best_epoch": best}
        attrs |= {"epochs": epochs, "wall_time": round(rng.uniform(0.05, 0.2), 3)}
        attrs["checkpoint"] = str(folder / f"trial-{i}" / "last.pt")
        trials.append(
            optuna.trial.create_trial(
                params=params,
                distributions=dists,
                value=values[best],
                intermediate_values=values,
                user_attrs=attrs,
            )
        )
    return trials


def fill_study(
    study: optuna.Study, url: str, template: list[FrozenTrial], total: int
) -> list[FrozenTrial]:
    """Add ``template`` to ``study`` and copy it in SQL until the study holds ``total``
    finished trials (``add_trials`` costs ~10 ms a trial through the ORM); then check the
    result through Optuna and return the trials.

    Every table with a ``trial_id`` column comes along; primary keys are left to the
    database, and the copies' numbers continue after the existing ones (SQLite and
    PostgreSQL alike).
    """
    import sqlalchemy as sa

    study.add_trials(template)
    n0, name = len(template), study.study_name
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)

        def columns(table: str) -> list[str]:
            pk = set(inspector.get_pk_constraint(table)["constrained_columns"])
            return [c["name"] for c in inspector.get_columns(table) if c["name"] not in pk]

        def q(names: list[str], prefix: str = "") -> str:
            return ", ".join(f'{prefix}"{c}"' for c in names)

        cols = columns("trials")
        shifted = q(cols, "t.").replace('t."number"', 't."number" + :shift')
        statements = [
            f"INSERT INTO trials ({q(cols)}) SELECT {shifted} FROM trials t "
            'WHERE t.study_id = :sid AND t."number" < :n0 ORDER BY t."number"'
        ]
        for table in inspector.get_table_names():
            tcols = columns(table)
            if table == "trials" or "trial_id" not in tcols:
                continue
            picked = q(tcols, "c.").replace('c."trial_id"', "n.trial_id")
            statements.append(
                f'INSERT INTO "{table}" ({q(tcols)}) SELECT {picked} FROM "{table}" c '
                "JOIN trials o ON o.trial_id = c.trial_id JOIN trials n ON n.study_id = "
                'o.study_id AND n."number" = o."number" + :shift '
                'WHERE o.study_id = :sid AND o."number" < :n0'
            )
        with engine.begin() as conn:
            sid = conn.execute(
                sa.text("SELECT study_id FROM studies WHERE study_name = :name"), {"name": name}
            ).scalar_one()
            for k in range(1, total // n0):
                for statement in statements:
                    conn.execute(sa.text(statement), {"shift": k * n0, "sid": sid, "n0": n0})
    finally:
        engine.dispose()
    trials = read_trials(url, name)
    epochs = len(template[0].intermediate_values)
    if not (
        len(trials) == total == len({t.number for t in trials})
        and all(t.state == TrialState.COMPLETE and t.params for t in trials)
        and all(len(t.intermediate_values) == epochs for t in trials)
    ):
        raise RuntimeError(f"the filled study {name!r} at {url} is not as intended")
    return trials


# -- PostgreSQL -----------------------------------------------------------------------------


def pg_problem(url: str | None) -> str | None:
    """Why PostgreSQL at ``url`` cannot be used, or ``None`` if it can."""
    if url is None:
        return "--pg-url none"
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any driver or connection problem: skip PostgreSQL
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def delete_study(url: str, name: str) -> None:
    """Delete study ``name`` from a server (best effort: warn, do not raise)."""
    from hpo_trainer.search.storage import open_storage

    storage = open_storage(url, heartbeat_interval=None)
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass  # never created
    except Exception as exc:  # the name is unique anyway
        print(f"  warning: could not delete study {name!r}: {exc}")
    finally:
        dispose(storage)


# -- the command line -----------------------------------------------------------------------

Part = Callable[[argparse.Namespace, Path], list[Result]]


def main(
    doc: str,
    parts: dict[str, Part],
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """Parse ``--quick``, ``--only PART`` (and ``extra`` options), run the parts, each in a
    scratch folder, and print the RESULT lines at the end; always return 0.

    A part that raises becomes a failed RESULT; the other parts still run.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument(
        "--only", action="append", choices=list(parts), metavar="PART",
        help=f"run only this part (repeatable): {', '.join(parts)}",
    )  # fmt: skip
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    title = Path(sys.argv[0]).stem
    names = list(dict.fromkeys(args.only or parts))
    print(f"{title} ({'quick' if args.quick else 'full'}): {', '.join(names)}")
    print(
        f"  python {platform.python_version()}, torch {torch.__version__}, optuna "
        f"{optuna.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    results: list[Result] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"{title}_") as tmp:
        for name in names:
            t0 = time.perf_counter()
            folder = Path(tmp) / name
            folder.mkdir()
            try:
                results += parts[name](args, folder)
            except Exception:
                traceback.print_exc()
                results.append(Result(name, None, "", "runs without an error", False))
            took, load = time.perf_counter() - t0, os.getloadavg()[0]
            print(f"  [{name}: {took:.1f} s, load average {load:.2f}]", flush=True)
    print(f"\n{title} done in {time.perf_counter() - started:.1f} s")
    for result in results:
        print(result.line())
    return 0


def timed_search(task: Any, log: Path, **options: Any) -> tuple[SearchRun, Any]:
    """Run hpo-trainer's ``search(task, **options)`` timed, the workers' stderr to ``log``.

    Returns:
        The search as its trials tell it, and the ``SearchOutcome``.

    """
    from hpo_trainer.search import search

    with stderr_to(log), clock() as c:
        outcome = search(task, **options)
    if outcome.problem:
        print(f"  warning: {outcome.problem}")
    trials = outcome.study.get_trials(deepcopy=False)
    return summarise(trials, c, outcome.config.n_workers), outcome
