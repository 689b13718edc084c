"""What the benchmarks share: the command line, interleaved timing, summaries of searches,
studies filled with finished trials, tables and ``RESULT`` lines."""

from __future__ import annotations

import argparse
import collections
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpo_trainer.facade.studyfile import load_trainer_from_file
from hpo_trainer.search import search
from hpo_trainer.search.storage import open_storage

K = TypeVar("K")
T = TypeVar("T")
SPANS = (
    "span: first trial start to last trial end; head: call start to first trial start; tail: "
    "last trial end to call end"
)
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
Part = Callable[[argparse.Namespace, Path], list[str]]


def result(
    name: str, value: float | None, spec: str, target: str = "none, for reference", ok: bool = True
) -> str:
    """One ``RESULT name=value (target ...) PASS/FAIL`` line; ``value=None`` prints error."""
    shown = "error" if value is None else format(value, spec)
    return f"RESULT {name}={shown} (target {target}) {'PASS' if ok else 'FAIL'}"


def ratio(a: float, b: float) -> float:
    """``a / b``, or NaN when ``b`` is zero or either is NaN."""
    return a / b if b and not (math.isnan(a) or math.isnan(b)) else math.nan


def median(values: Iterable[float]) -> float:
    """The median of the values that are not NaN; NaN of nothing."""
    values = [v for v in values if not math.isnan(v)]
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


def interleave(
    variants: dict[K, Callable[[], T]], rounds: int | dict[K, int], warm_up: bool = False
) -> dict[K, list[T]]:
    """Call each variant once a round (``rounds``, or a number each; with ``warm_up`` once more
    first, unrecorded), rotating their order so that a busy machine slows them alike."""
    due = rounds if isinstance(rounds, dict) else dict.fromkeys(variants, rounds)
    for fn in variants.values() if warm_up else ():
        fn()
    out: dict[K, list[T]] = {name: [] for name in variants}
    for r in range(max(due.values())):
        names = [name for name in variants if due[name] > r]
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            out[name].append(variants[name]())
    return out


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
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (``None``: as they are)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or before)
    yield
    torch.set_num_threads(before)


@dataclass
class SearchRun:
    """A finished search as its trials' time stamps tell it (seconds). Steady trials leave
    out each process's first: it pays one-off costs (its first optimizer imports dynamo)."""

    wall: float  # the whole call
    head: float  # call start to first trial start
    span: float  # first trial start to last trial end
    tail: float  # last trial end to call end
    trials: int  # finished (complete or pruned)
    failed: int
    left: int  # RUNNING or WAITING
    epochs: int
    median_trial: float  # of the steady trials
    ms_per_epoch: float  # inside steady trials, per epoch they trained
    best: float
    params: list[dict[str, Any]]  # by trial number
    per_worker: dict[Any, int]  # finished trials by the worker's user attribute


def summarise(
    trials: Sequence[FrozenTrial], began: datetime.datetime, wall: float, procs: int
) -> SearchRun:
    """Summarise the trials of a search begun at ``began`` (Optuna's naive local time) that
    took ``wall`` seconds in ``procs`` processes."""
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    done.sort(key=lambda t: t.datetime_start)  # type: ignore[arg-type,return-value]
    steady = done[procs:]
    secs = [(t.datetime_complete - t.datetime_start).total_seconds() for t in steady]  # type: ignore[operator]
    values = [t.value for t in done if t.state == TrialState.COMPLETE and t.value is not None]
    first = done[0].datetime_start if done else None
    last = max((t.datetime_complete for t in done), default=None)  # type: ignore[type-var]

    def between(a: datetime.datetime | None, b: datetime.datetime | None) -> float:
        return (b - a).total_seconds() if a and b else math.nan

    return SearchRun(
        wall=wall,
        head=between(began, first),
        span=between(first, last),
        tail=between(last, began + datetime.timedelta(seconds=wall)),
        trials=len(done),
        failed=sum(t.state == TrialState.FAIL for t in trials),
        left=sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials),
        epochs=sum(len(t.intermediate_values) for t in done),
        median_trial=median(secs),
        ms_per_epoch=ratio(1e3 * sum(secs), sum(len(t.intermediate_values) for t in steady)),
        best=min(values, default=math.nan),
        params=[t.params for t in sorted(done, key=lambda t: t.number)],
        per_worker=dict(collections.Counter(t.user_attrs.get("worker") for t in done)),
    )


def timed_search(
    study_file: Path, log: Path, threads: int | None, file_args: dict[str, Any], **options: Any
) -> tuple[SearchRun, Any]:
    """Run ``search`` on ``study_file`` in a new folder beside ``log`` (SQLite unless given a
    ``storage``), workers' stderr to ``log``; return it as its trials tell it, and the outcome."""
    folder = Path(tempfile.mkdtemp(dir=log.parent))
    trainer = load_trainer_from_file(study_file, runs_dir=str(folder), quiet=True, **file_args)
    options.setdefault("storage", f"sqlite:///{folder / 'study.db'}")
    began, started = datetime.datetime.now(), time.perf_counter()
    with stderr_to(log), torch_threads(threads):
        outcome = search(trainer, **options)
    wall = time.perf_counter() - started
    if outcome.problem:
        print(f"  warning: {outcome.problem}")
    trials = outcome.study.get_trials(deepcopy=False)
    return summarise(trials, began, wall, outcome.config.placement.n_workers), outcome


def dispose(storage: Any) -> None:
    """Release a storage's database connections, if it has any."""
    if getattr(storage, "engine", None) is not None:
        storage.engine.dispose()


def read_trials(url: str, name: str) -> list[FrozenTrial]:
    """Every trial of study ``name`` at ``url``."""
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finally:
        dispose(storage)


def delete_study(url: str, name: str) -> None:
    """Delete study ``name`` (best effort: the names are unique anyway)."""
    storage = open_storage(url)
    with contextlib.suppress(Exception):
        optuna.delete_study(study_name=name, storage=storage)
    dispose(storage)


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
    """``n`` finished trials as a search leaves them: random params of ``dists``,
    hpo-trainer's user attributes, a curve of ``epochs`` values and its best as the value."""
    rng = random.Random(seed)
    asker = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed))
    trials = []
    for i in range(n):
        values = curve(rng, epochs)
        best = min(values, key=values.__getitem__)
        attrs = {"worker": i % 4, "host": platform.node(), "device": "cpu", "best_epoch": best}
        attrs |= {"epochs": epochs, "wall_time": round(rng.uniform(0.05, 0.2), 3)}
        attrs["checkpoint"] = str(folder / f"trial-{i}" / "last.pt")
        kw = {"distributions": dists, "intermediate_values": values, "user_attrs": attrs}
        trials.append(create_trial(params=asker.ask(dists).params, value=values[best], **kw))
    return trials


def fill_study(study: optuna.Study, url: str, template: list[FrozenTrial], total: int) -> None:
    """Add ``template`` to ``study`` and copy it in SQL (``add_trials`` costs ~10 ms a trial),
    with every table that has a ``trial_id``, doubling, until the study holds ``total`` trials
    (any number: the last copy takes only the first trials it needs)."""
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
            if engine.dialect.name == "postgresql":  # statistics lag the copies: a nested loop
                conn.execute(sa.text("SET LOCAL enable_nestloop = off"))  # would be quadratic
            sid = conn.execute(
                sa.text("SELECT study_id FROM studies WHERE study_name = :name"), {"name": name}
            ).scalar_one()
            have = n0
            while have < total:  # doubling: the first trials copied after the last
                more = min(have, total - have)
                for statement in statements:
                    conn.execute(sa.text(statement), {"shift": have, "sid": sid, "n0": more})
                have += more
            complete = conn.execute(
                sa.text(
                    "SELECT count(*) FROM trials WHERE study_id = :sid AND state = 'COMPLETE'"
                ),
                {"sid": sid},
            ).scalar_one()
    finally:
        engine.dispose()
    if complete != total:
        raise RuntimeError(f"the filled study {name!r} at {url} is not as intended")


def main(doc: str, parts: dict[str, Part], pg: bool = False) -> int:
    """Parse the options, run the parts in scratch folders, print their RESULT lines last."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--only", action="append", choices=list(parts), metavar="PART")
    if pg:
        url = os.environ.get("HPO_BENCH_PG_URL", PG_URL)
        parser.add_argument("--pg-url", default=url, help="PostgreSQL URL, or 'none' to skip it")
    args = parser.parse_args()
    if pg and args.pg_url.lower() == "none":
        args.pg_url = None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    title, names = Path(sys.argv[0]).stem, list(dict.fromkeys(args.only or parts))
    print(f"{title} ({'quick' if args.quick else 'full'}): {', '.join(names)}")
    versions = f"torch {torch.__version__}, optuna {optuna.__version__}"
    print(f"  {versions}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    results: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"{title}_") as tmp:
        for name in names:
            t0 = time.perf_counter()
            (Path(tmp) / name).mkdir()
            try:
                results += parts[name](args, Path(tmp) / name)
            except Exception:
                traceback.print_exc()
                results.append(result(name, None, "", "runs without an error", False))
            took, load = time.perf_counter() - t0, os.getloadavg()[0]
            print(f"  [{name}: {took:.1f} s, load average {load:.2f}]", flush=True)
    print(f"\n{title} done in {time.perf_counter() - started:.1f} s")
    print("\n".join(results))
    return 0
