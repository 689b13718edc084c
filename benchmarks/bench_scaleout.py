"""Benchmark scale-out: trials per minute by storage and worker count, and how the storage
work of one trial grows with the size of the study.

Two parts, each interleaving its variants so that a busy machine slows them alike, each
printing tables and ``RESULT name=value (target ...) PASS/FAIL`` lines (collected at the
end):

``throughput``
    Trials per minute and errors of a search with 1, 2, 4 and 8 local workers on (a) a
    SQLite file as hpo-trainer tunes it (``sqlite:///...``), (b) a journal file
    (``journal:/path/study.log``) and (c) PostgreSQL (``--pg-url``; a unique study name per
    run, deleted afterwards). The trials are tiny on purpose: this file is also the study
    file the workers load (``make_trainer``: an MLP 16-32-4 on 512 + 128 synthetic
    examples in memory, ~1-2 ms of compute per epoch), 20 epochs each, no pruning, so the
    storage, the checkpoints and the worker loop dominate. Each search goes through
    ``make_config`` / ``create_study`` / ``run_worker`` (1 worker, in this process, warmed
    up, one torch thread) or ``run_workers`` (spawned workers, as ``search()`` does, which
    also gives their exit codes). Spawned workers pay their one-off costs (imports, the
    first optimizer, TensorBoard) in ``make_trainer`` and then wait at a start barrier
    until all of them are up, so that the span from the first trial's start to the last
    trial's end measures W workers running together; their start-up is in the head (call
    start to first trial start) and in the wall time. The span figure is the main one.
    Errors: FAIL trials, trials left RUNNING/WAITING, finished trials other than the budget,
    worker exit codes other than 0, exceptions of the call, and tracebacks in the workers'
    log.
``overhead``
    The storage work of one trial as hpo-trainer does it, in a SQLite study (and in
    PostgreSQL) that already holds 100 and 2,000 finished trials of 20 intermediate values
    each (50 or 100 written by Optuna's ``add_trials``, the rest copied in SQL, checked
    through Optuna before timing). Each timed trial calls hpo-trainer's own functions in
    the order ``search._work`` and ``search._run_trial`` do: under the budget lock
    ``fail_stale_trials``, ``_fail_silent_trials``, ``study.get_trials``, ``_ask`` and
    the first heartbeat; the trial's ``worker`` and ``host`` attributes and the suggestion
    (where TPE samples: Optuna runs the relative sampling at the first suggest, not in
    ``ask``); a ``FastReporter`` with ``report`` +
    ``should_prune`` for 20 epochs; the five closing ``set_user_attr`` calls and ``tell``;
    and ``_cleanup_checkpoints`` (the study's folder holds a ``trial-N`` folder per trial
    and the checkpoints of the 3 best, as a real search leaves it; each timed trial writes
    its own checkpoint, untimed, for the clean-up to remove). The sampler's share (TPE's
    methods, timed by wrapping them) is shown apart: it is compute that grows with the
    study, not storage work. As a cross-check, the real worker
    loop (``run_worker`` in this process) runs a few more trials on both studies: its
    start-to-start cycle minus the same trial trained locally (checkpoint and TensorBoard
    callbacks, no storage) is its overhead per trial.

Run:
    .venv/bin/python benchmarks/bench_scaleout.py              # full run, ~5 minutes idle
    .venv/bin/python benchmarks/bench_scaleout.py --quick      # smoke test, ~2 minutes
    .venv/bin/python benchmarks/bench_scaleout.py --only overhead
    .venv/bin/python benchmarks/bench_scaleout.py --pg-url none   # without PostgreSQL

PostgreSQL comes from ``--pg-url`` (default: ``$HPO_BENCH_PG_URL`` or
``postgresql+psycopg://postgres@127.0.0.1:5432/test``); if it cannot be reached its cells
are skipped and said so. It always exits 0: the RESULT lines say whether each target is
met. Throughput cells that run in several rounds show the median of the rounds. Quick mode
uses smaller sizes (its tables say which), so its PASS/FAIL lines are indicative only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import math
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState
from torch import nn
from torch.optim import SGD

from hpo_trainer import Hyperparameters, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import Result, print_table, ratio, run_parts, stderr_to, torch_threads  # noqa: E402

THIS = Path(__file__).resolve()
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

OVERHEAD_RATIO_TARGET = 1.5  # ms per trial at 2,000 / at 100 finished trials, at most
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
KINDS = ("sqlite", "journal", "postgresql")
BARRIER_TIMEOUT_S = 120.0


# -- the study the workers load ------------------------------------------------------------


class TinyMLP(nn.Module):
    """``in_dim -> width -> classes`` with ReLU: a millisecond of work per epoch."""

    def __init__(self, in_dim: int = 16, width: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(), nn.Linear(width, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits."""
        return self.net(x)


def _pay_one_off_costs() -> None:
    """Import what a process's first trial would (the first optimizer imports dynamo)."""
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    from torch.utils.tensorboard.summary import hparams  # noqa: F401

    SGD(nn.Linear(2, 2).parameters(), lr=0.1)


def _wait_for_peers(barrier: Path, parties: int) -> None:
    """Check in at ``barrier`` and wait until ``parties`` processes have (or a timeout)."""
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / f"{os.getpid()}.ready").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while time.monotonic() < deadline:
        if sum(1 for p in barrier.iterdir() if p.suffix == ".ready") >= parties:
            return
        time.sleep(0.02)


def make_trainer(
    *,
    n_train: int = 512,
    dim: int = 16,
    width: int = 32,
    barrier: str | None = None,
    parties: int = 0,
    **options: Any,
) -> Trainer:
    """The benchmark's study: a tiny MLP on synthetic data, only ``lr`` searched.

    Every trial costs about the same whatever its lr, and little, so that the storage and
    the worker loop dominate. With ``barrier``, a spawned worker (not the process that
    starts the search) pays its one-off costs and then waits until ``parties`` workers have
    reached the barrier folder.
    """
    gen = torch.Generator().manual_seed(0)
    n_val = n_train // 4
    x = torch.randn(n_train + n_val, dim, generator=gen)
    y = (x @ torch.randn(dim, 4, generator=gen)).argmax(dim=1)
    kwargs: dict[str, Any] = {
        "batch_size": 64,
        "seed": 0,
        "name": "bench_scaleout",
        "device": "cpu",
        **options,
    }
    tr = Trainer((x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), **kwargs)
    hyp = Hyperparameters()
    hyp.register(["lr", "momentum"])
    hyp.set_range("lr", -3, -1)
    hyp.set_value("momentum", 0.9)
    tr.set_hyperparameters(hyp)
    tr.set_model(TinyMLP)
    tr.prime_model(in_dim=dim, width=width, classes=4)
    tr.set_criterion(nn.CrossEntropyLoss)
    tr.set_optimizer(SGD)
    if barrier is not None and multiprocessing.parent_process() is not None:
        _pay_one_off_costs()
        _wait_for_peers(Path(barrier), parties)
    return tr


# -- shared helpers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run."""

    tp_trials: int  # finished trials per search
    tp_epochs: int
    tp_rounds: tuple[tuple[int, int], ...]  # (workers, rounds): start-up makes 8 costly
    ov_sizes: tuple[int, int]  # finished trials in the small and the large study
    ov_epochs: int
    ov_warm: int  # untimed trials per study before timing
    ov_timed: int  # timed trials per study, interleaved
    ov_loop: int  # real worker-loop trials per study (cross-check)

    @property
    def tp_workers(self) -> tuple[int, ...]:
        """The worker counts timed."""
        return tuple(w for w, _ in self.tp_rounds)


FULL = Config(40, 20, ((1, 3), (2, 2), (4, 2), (8, 1)), (100, 2000), 20, 2, 30, 12)
QUICK = Config(10, 20, ((1, 1), (2, 1), (8, 1)), (100, 2000), 20, 1, 8, 6)


def median(values: Sequence[float]) -> float:
    """The median, or NaN of nothing."""
    return statistics.median(values) if values else math.nan


def fmt(value: float, spec: str = ".1f") -> str:
    """Format a number, ``-`` for NaN."""
    return "-" if value is None or math.isnan(value) else format(value, spec)


@dataclass
class Clock:
    """The wall time of a block and the local times it began and ended (Optuna's clock)."""

    began: datetime.datetime = field(default_factory=datetime.datetime.now)
    ended: datetime.datetime | None = None
    wall: float = math.nan

    @classmethod
    @contextlib.contextmanager
    def timing(cls) -> Iterator[Clock]:
        """Time the block."""
        clock = cls()
        started = time.perf_counter()
        try:
            yield clock
        finally:
            clock.wall = time.perf_counter() - started
            clock.ended = datetime.datetime.now()


def storage_url(kind: str, folder: Path, pg_url: str | None) -> str:
    """The storage URL of ``kind`` for a search whose files go in ``folder``."""
    if kind == "sqlite":
        return f"sqlite:///{folder / 'study.db'}"
    if kind == "journal":
        return f"journal:{folder / 'study.log'}"
    if pg_url is None:
        raise RuntimeError("no PostgreSQL URL")
    return pg_url


def pg_reachable(url: str | None) -> str | None:
    """Return why PostgreSQL at ``url`` cannot be used, or ``None`` if it can."""
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


def open_study_storage(url: str) -> Any:
    """hpo-trainer's storage for ``url`` (no heartbeat: for reading results only)."""
    from hpo_trainer.search.storage import open_storage

    return open_storage(url, heartbeat_interval=None)


def close_storage(storage: Any) -> None:
    """Release a storage's database connections, if it has any."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


def delete_pg_study(url: str, name: str) -> None:
    """Delete study ``name`` from PostgreSQL (best effort: report, do not raise)."""
    storage = open_study_storage(url)
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass  # never created
    except Exception as exc:  # report and go on: the study name is unique anyway
        print(f"  warning: could not delete PostgreSQL study {name!r}: {exc}")
    finally:
        close_storage(storage)


# -- 1. throughput -------------------------------------------------------------------------


@dataclass
class Cell:
    """One timed search: a storage kind, a worker count, a round."""

    kind: str
    workers: int
    round: int
    wall: float = math.nan
    span: float = math.nan
    head: float = math.nan
    tail: float = math.nan
    done: int = 0
    failed: int = 0
    left: int = 0  # trials left RUNNING or WAITING
    off_budget: int = 0  # |finished - budget|
    bad_exits: int = 0
    exception: str | None = None
    tracebacks: int = 0
    median_trial: float = math.nan
    ms_per_epoch: float = math.nan  # inside trials, per epoch trained
    active: int = 0  # workers that finished at least one trial
    per_worker: tuple[int, int] = (0, 0)  # fewest and most trials of a worker

    @property
    def errors(self) -> int:
        """Everything that went wrong, counted once each."""
        return (
            self.failed
            + self.left
            + self.off_budget
            + self.bad_exits
            + (self.exception is not None)
            + self.tracebacks
        )

    @property
    def tpm_span(self) -> float:
        """Finished trials per minute over the trials' span."""
        return ratio(60 * self.done, self.span)

    @property
    def tpm_wall(self) -> float:
        """Finished trials per minute over the whole call."""
        return ratio(60 * self.done, self.wall)


def _summarise_cell(cell: Cell, trials: list[optuna.trial.FrozenTrial], clock: Clock) -> None:
    stamped = [t for t in trials if t.state in DONE and t.datetime_start and t.datetime_complete]
    cell.done = sum(1 for t in trials if t.state in DONE)
    cell.failed = sum(1 for t in trials if t.state == TrialState.FAIL)
    cell.left = sum(1 for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING))
    if stamped:
        first = min(t.datetime_start for t in stamped)
        last = max(t.datetime_complete for t in stamped)
        cell.span = (last - first).total_seconds()
        cell.head = (first - clock.began).total_seconds()
        if clock.ended is not None:
            cell.tail = (clock.ended - last).total_seconds()
        durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in stamped]
        cell.median_trial = median(durations)
        epochs = sum(len(t.intermediate_values) for t in stamped)
        cell.ms_per_epoch = ratio(1e3 * sum(durations), epochs)
    counts: dict[Any, int] = {}
    for t in stamped:
        worker = t.user_attrs.get("worker")
        counts[worker] = counts.get(worker, 0) + 1
    cell.active = len(counts)
    if counts:
        cell.per_worker = (min(counts.values()), max(counts.values()))


def run_cell(
    kind: str, workers: int, rnd: int, cfg: Config, tmp: Path, log: Path, pg_url: str | None
) -> Cell:
    """Run one search of ``cfg.tp_trials`` tiny trials and summarise it."""
    from hpo_trainer.search.engine import create_study, make_config, run_worker
    from hpo_trainer.studyfile import load_trainer_from_file
    from hpo_trainer.search.processes import run_workers

    cell = Cell(kind, workers, rnd)
    folder = tmp / f"{kind}-w{workers}-r{rnd}"
    folder.mkdir(parents=True)
    name = f"bench_scaleout_{kind}_w{workers}_r{rnd}_{uuid.uuid4().hex[:10]}"
    url = storage_url(kind, folder, pg_url)
    options: dict[str, Any] = {"runs_dir": str(folder / "runs"), "quiet": True}
    if workers > 1:
        options.update(barrier=str(folder / "barrier"), parties=workers)
    trainer = load_trainer_from_file(THIS, **options)
    mark = log.stat().st_size if log.exists() else 0
    with stderr_to(log), Clock.timing() as clock:
        try:
            search_cfg = make_config(
                trainer,
                epochs=cfg.tp_epochs,
                n_trials=cfg.tp_trials,
                study_name=name,
                storage=url,
                pruner="none",
                seed=0,
            )
            create_study(search_cfg)
            if workers == 1:
                with torch_threads(1):
                    run_worker(trainer, search_cfg, worker=0)
            else:
                codes = run_workers(trainer, search_cfg, n_workers=workers)
                cell.bad_exits = sum(1 for c in codes if c != 0)
        except Exception as exc:  # counted as an error of the cell; the bench goes on
            cell.exception = f"{type(exc).__name__}: {exc}"
    with open(log, "rb") as f:
        f.seek(mark)
        cell.tracebacks = f.read().decode(errors="replace").count("Traceback (most recent")
    storage = open_study_storage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
    except Exception as exc:  # the study was never created
        cell.exception = cell.exception or f"{type(exc).__name__}: {exc}"
        trials = []
    finally:
        close_storage(storage)
    _summarise_cell(cell, trials, clock)
    cell.off_budget = abs(cell.done - cfg.tp_trials)
    cell.wall = clock.wall
    if kind == "postgresql":
        delete_pg_study(url, name)
    return cell


def _warm_up_in_process(kinds: Sequence[str], tmp: Path, log: Path, pg_url: str | None) -> None:
    """A 2-trial search per storage kind in this process, untimed: pays one-off costs."""
    from hpo_trainer.search.engine import create_study, make_config, run_worker
    from hpo_trainer.studyfile import load_trainer_from_file

    _pay_one_off_costs()
    for kind in kinds:
        folder = tmp / f"warm-{kind}"
        folder.mkdir(parents=True)
        name = f"bench_scaleout_warm_{uuid.uuid4().hex[:10]}"
        url = storage_url(kind, folder, pg_url)
        trainer = load_trainer_from_file(THIS, runs_dir=str(folder / "runs"), quiet=True)
        search_cfg = make_config(
            trainer, epochs=2, n_trials=2, study_name=name, storage=url, pruner="none", seed=0
        )
        try:
            with stderr_to(log), torch_threads(1):
                create_study(search_cfg)
                run_worker(trainer, search_cfg, worker=0)
        finally:
            if kind == "postgresql":
                delete_pg_study(url, name)


def bench_throughput(cfg: Config, tmp: Path, pg_url: str | None) -> list[Result]:
    """Part 1: trials per minute and errors, storage x workers."""
    tmp.mkdir(parents=True)
    log = tmp / "workers.log"
    why_not_pg = pg_reachable(pg_url)
    kinds = [k for k in KINDS if k != "postgresql" or why_not_pg is None]
    if why_not_pg is not None:
        print(f"  PostgreSQL skipped: {why_not_pg}")
    _warm_up_in_process(kinds, tmp, log, pg_url)
    cells: dict[tuple[str, int], list[Cell]] = {(k, w): [] for k in kinds for w in cfg.tp_workers}
    for rnd in range(max(r for _, r in cfg.tp_rounds)):
        # Interleave: every worker count in turn, and the storages in a rotating order.
        due = [w for w, rounds in cfg.tp_rounds if rounds > rnd]
        order = due if rnd % 2 == 0 else due[::-1]
        for i, workers in enumerate(order):
            shift = (rnd + i) % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                cell = run_cell(kind, workers, rnd, cfg, tmp, log, pg_url)
                cells[(kind, workers)].append(cell)
                note = f", error: {cell.exception}" if cell.exception else ""
                print(
                    f"  [round {rnd + 1}: {kind:10s} {workers} worker(s): {cell.done} trials, "
                    f"wall {cell.wall:.1f} s, span {cell.span:.1f} s, {cell.errors} error(s)"
                    f"{note}]",
                    flush=True,
                )

    def med(kind: str, workers: int, get: Callable[[Cell], float]) -> float:
        return median([v for c in cells[(kind, workers)] if not math.isnan(v := get(c))])

    rows = []
    for kind in kinds:
        for workers in cfg.tp_workers:
            rs = cells[(kind, workers)]
            per_round = " / ".join(fmt(c.tpm_span, ".0f") for c in rs)
            errs = sum(c.errors for c in rs)
            detail = ",".join(
                f"{label}{n}"
                for label, n in (
                    ("fail", sum(c.failed for c in rs)),
                    ("left", sum(c.left for c in rs)),
                    ("budget", sum(c.off_budget for c in rs)),
                    ("exit", sum(c.bad_exits for c in rs)),
                    ("exc", sum(c.exception is not None for c in rs)),
                    ("tb", sum(c.tracebacks for c in rs)),
                )
                if n
            )
            rows.append(
                [
                    kind,
                    workers,
                    "/".join(str(c.done) for c in rs),
                    f"{errs}" + (f" ({detail})" if detail else ""),
                    fmt(med(kind, workers, lambda c: c.wall)),
                    fmt(med(kind, workers, lambda c: c.head)),
                    fmt(med(kind, workers, lambda c: c.span), ".2f"),
                    fmt(med(kind, workers, lambda c: c.tail), ".2f"),
                    fmt(med(kind, workers, lambda c: c.tpm_span), ".0f"),
                    per_round,
                    fmt(med(kind, workers, lambda c: c.tpm_wall), ".0f"),
                    fmt(med(kind, workers, lambda c: 1e3 * c.median_trial), ".0f"),
                    fmt(med(kind, workers, lambda c: c.ms_per_epoch), ".2f"),
                    "/".join(f"{c.active}" for c in rs),
                    "/".join(f"{c.per_worker[0]}-{c.per_worker[1]}" for c in rs),
                ]
            )
    print_table(
        f"throughput: {cfg.tp_trials} trials x {cfg.tp_epochs} epochs per search (tiny MLP, "
        f"pruner none, TPE), interleaved rounds (workers x rounds: "
        f"{', '.join(f'{w} x {r}' for w, r in cfg.tp_rounds)}), medians over rounds; "
        "1 worker runs in this process (1 torch thread), more are spawned (cores // workers "
        "threads each) and wait at a start barrier; span: first trial start to last trial "
        "end; head: call start to first trial start; tail: last trial end to call end; "
        "ms/trial: median trial duration; ms/epoch: time inside trials per epoch; active: "
        "workers that finished a trial; per worker: fewest-most trials of a worker",
        [
            "storage",
            "workers",
            "trials",
            "errors",
            "wall s",
            "head s",
            "span s",
            "tail s",
            "trials/min (span)",
            "per round",
            "trials/min (wall)",
            "ms/trial",
            "ms/epoch",
            "active",
            "per worker",
        ],
        rows,
    )
    for title, get, spec in (
        ("trials per minute over the trials' span (main figure)", lambda c: c.tpm_span, ".0f"),
        ("trials per minute over the wall time of the call", lambda c: c.tpm_wall, ".0f"),
        ("median ms per trial (inside the trial)", lambda c: 1e3 * c.median_trial, ".0f"),
    ):
        print_table(
            f"throughput, storage x workers: {title}; medians over rounds",
            ["storage", *(f"{w} worker{'s' if w > 1 else ''}" for w in cfg.tp_workers)],
            [[kind, *(fmt(med(kind, w, get), spec) for w in cfg.tp_workers)] for kind in kinds],
        )
    total_errors = sum(c.errors for rs in cells.values() for c in rs)
    results = [
        Result(
            "throughput_errors",
            total_errors,
            "d",
            f"0, over {sum(len(rs) for rs in cells.values())} searches",
            total_errors == 0,
        )
    ]
    for kind in kinds:
        spans = {w: med(kind, w, lambda c: c.tpm_span) for w in cfg.tp_workers}
        valid = {w: v for w, v in spans.items() if not math.isnan(v)}
        best_w = max(valid, key=lambda w: valid[w]) if valid else None
        note = "" if cfg.tp_trials == FULL.tp_trials else f", quick: {cfg.tp_trials} trials"
        results.append(
            Result(
                f"throughput_{kind}_best_trials_per_min",
                valid[best_w] if best_w else None,
                ".0f",
                f"none, for reference: span-based, best at {best_w} worker(s){note}",
                best_w is not None,
            )
        )
        if 1 in spans and 2 in spans:
            results.append(
                Result(
                    f"throughput_{kind}_2w_over_1w",
                    ratio(spans[2], spans[1]),
                    ".2f",
                    "none, for reference: span-based",
                    True,
                )
            )
    if why_not_pg is not None:
        results.append(Result("throughput_postgresql", None, "", f"skipped: {why_not_pg}", False))
    return results


# -- 2. overhead ---------------------------------------------------------------------------


def _curve(rng: random.Random, epochs: int) -> dict[int, float]:
    """A plausible validation-loss curve: a noisy decay from ~1.4 to a floor."""
    start, floor = rng.uniform(1.2, 1.5), rng.uniform(0.1, 1.0)
    return {
        s: floor + (start - floor) * math.exp(-s / 4) + rng.gauss(0, 0.01)
        for s in range(1, epochs + 1)
    }


def _space_distributions(trainer: Trainer) -> dict[str, Any]:
    """The Optuna distributions of ``trainer``'s search space, by parameter name."""
    study = optuna.create_study()
    trial = study.ask()
    for space in trainer.spaces.values():
        space.suggest(trial)
    return dict(trial.distributions)


def _template_trials(
    trainer: Trainer, n: int, epochs: int, checkpoint_dir: Path, seed: int = 0
) -> list[optuna.trial.FrozenTrial]:
    """Finished trials as hpo-trainer leaves them: its params, user attributes, curves."""
    rng = random.Random(seed)
    dists = _space_distributions(trainer)
    trials = []
    for i in range(n):
        params = {}
        for pname, dist in dists.items():
            if isinstance(dist, optuna.distributions.FloatDistribution) and dist.log:
                params[pname] = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
            elif isinstance(dist, optuna.distributions.FloatDistribution):
                params[pname] = rng.uniform(dist.low, dist.high)
            elif isinstance(dist, optuna.distributions.CategoricalDistribution):
                params[pname] = rng.choice(dist.choices)
            else:
                params[pname] = dist.low
        curve = _curve(rng, epochs)
        best = min(curve, key=lambda s: curve[s])
        trials.append(
            optuna.trial.create_trial(
                params=params,
                distributions=dists,
                value=curve[best],
                intermediate_values=curve,
                user_attrs={
                    "worker": i % 4,
                    "host": platform.node(),
                    "device": "cpu",
                    "best_epoch": best,
                    "epochs": epochs,
                    "wall_time": round(rng.uniform(0.05, 0.2), 3),
                    "checkpoint": str(checkpoint_dir / f"trial-{i}" / "last.pt"),
                },
            )
        )
    return trials


def _copy_trials(url: str, study_id: int, n0: int, copies: int) -> None:
    """Append ``copies`` copies of the study's first ``n0`` trials, in plain SQL.

    Every table with a ``trial_id`` column comes along; primary keys are left to the
    database, and the copies' numbers continue after the existing ones. Works on SQLite and
    PostgreSQL alike (identifiers quoted, ids mapped by trial number).
    """
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)

        def columns(table: str) -> list[str]:
            pk = set(inspector.get_pk_constraint(table)["constrained_columns"])
            return [c["name"] for c in inspector.get_columns(table) if c["name"] not in pk]

        def q(name: str) -> str:
            return f'"{name}"'

        trial_cols = columns("trials")
        children = {
            table: cols
            for table in inspector.get_table_names()
            if table != "trials" and "trial_id" in (cols := columns(table))
        }
        insert_trials = sa.text(
            f"INSERT INTO trials ({', '.join(map(q, trial_cols))}) SELECT "
            + ", ".join(f"t.{q(c)} + :shift" if c == "number" else f"t.{q(c)}" for c in trial_cols)
            + ' FROM trials t WHERE t.study_id = :sid AND t."number" < :n0 ORDER BY t."number"'
        )
        insert_children = [
            sa.text(
                f"INSERT INTO {q(table)} ({', '.join(map(q, cols))}) SELECT "
                + ", ".join("n.trial_id" if c == "trial_id" else f"c.{q(c)}" for c in cols)
                + f" FROM {q(table)} c JOIN trials o ON o.trial_id = c.trial_id "
                'JOIN trials n ON n.study_id = o.study_id AND n."number" = o."number" + :shift '
                'WHERE o.study_id = :sid AND o."number" < :n0'
            )
            for table, cols in children.items()
        ]
        with engine.begin() as conn:
            for k in range(1, copies + 1):
                args = {"shift": k * n0, "sid": study_id, "n0": n0}
                conn.execute(insert_trials, args)
                for statement in insert_children:
                    conn.execute(statement, args)
    finally:
        engine.dispose()


class SamplerClock:
    """Times the sampler's methods on one sampler object (outermost calls only)."""

    METHODS = (
        "infer_relative_search_space",
        "sample_relative",
        "sample_independent",
        "before_trial",
        "after_trial",
    )

    def __init__(self, sampler: optuna.samplers.BaseSampler) -> None:
        self.total = 0.0
        self._depth = 0
        for name in self.METHODS:
            setattr(sampler, name, self._wrap(getattr(sampler, name)))

    def _wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return method(*args, **kwargs)
            self._depth += 1
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - started
                self._depth -= 1

        return timed


@dataclass
class OverheadStudy:
    """A pre-populated study and what a worker holds to run trials on it."""

    kind: str
    size: int
    url: str
    name: str
    search_cfg: Any
    storage: Any = None
    study: Any = None
    lock: Any = None
    sampler_clock: SamplerClock | None = None
    built_s: float = math.nan
    cold_ms: float = math.nan  # a fresh worker's first read of every trial
    samples: list[dict[str, float]] = field(default_factory=list)
    inside: list[float] = field(default_factory=list)  # real-loop trial durations, s
    loop_overhead_ms: float = math.nan


PHASES = ("loop", "sampler", "start", "epochs", "tell", "cleanup")


def build_overhead_study(
    kind: str, size: int, trainer: Trainer, cfg: Config, tmp: Path, pg_url: str | None
) -> OverheadStudy:
    """Create a study with ``size`` finished trials, its trial folders and best checkpoints."""
    from hpo_trainer.train import checkpoint
    from hpo_trainer.search.engine import create_study, make_config, trial_dir

    started = time.perf_counter()
    name = f"bench_scaleout_ov_{kind}_{size}_{uuid.uuid4().hex[:10]}"
    url = (
        f"sqlite:///{tmp / f'ov-{size}.db'}"
        if kind == "sqlite"
        else storage_url(kind, tmp, pg_url)
    )
    search_cfg = make_config(
        trainer,
        epochs=cfg.ov_epochs,
        n_trials=10 * size,
        study_name=name,
        storage=url,
        pruner="none",
        seed=0,
    )
    ov = OverheadStudy(kind, size, url, name, search_cfg)
    study = create_study(search_cfg)
    n0 = 100 if size % 100 == 0 else size
    templates = _template_trials(
        trainer, n0, cfg.ov_epochs, Path(search_cfg.runs_dir) / name, seed=size
    )
    study.add_trials(templates)
    close_storage(getattr(study._storage, "_backend", study._storage))
    if size > n0:
        _copy_trials(url, study._study_id, n0, size // n0 - 1)
    storage = open_study_storage(url)
    try:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finally:
        close_storage(storage)
    ok = (
        len(trials) == size
        and len({t.number for t in trials}) == size
        and all(t.state == TrialState.COMPLETE and t.value is not None for t in trials)
        and all(len(t.intermediate_values) == cfg.ov_epochs and t.params for t in trials)
        and all(t.user_attrs.get("best_epoch") for t in trials)
    )
    if not ok:
        raise RuntimeError(f"the pre-populated study {name} is not as intended")
    # As a search leaves its folder: a trial-N folder per trial (TensorBoard events), the
    # checkpoints of the best 3 (keep_checkpoints).
    for t in trials:
        trial_dir(search_cfg, t.number).mkdir(parents=True, exist_ok=True)
    best = sorted(trials, key=lambda t: t.value)[: search_cfg.keep_checkpoints]
    for t in best:
        checkpoint.save({"w": torch.zeros(4)}, trial_dir(search_cfg, t.number) / "last.pt")
    ov.built_s = time.perf_counter() - started
    return ov


def open_for_work(ov: OverheadStudy, trainer: Trainer) -> None:
    """Open the study as ``run_worker`` does (storage, sampler, pruner, lock)."""
    from hpo_trainer.search.engine import _storage
    from hpo_trainer.search.storage import budget_lock
    from hpo_trainer.search.strategies import make_pruner, make_sampler

    c = ov.search_cfg
    ov.storage = _storage(c)
    sampler = make_sampler(c.sampler, seed=c.seed, spaces=trainer.spaces)
    ov.sampler_clock = SamplerClock(sampler)
    ov.study = optuna.load_study(
        study_name=c.study_name,
        storage=ov.storage,
        sampler=sampler,
        pruner=make_pruner(c.pruner, epochs=c.epochs),
    )
    ov.lock = budget_lock(c.storage, ov.storage, c.study_name)
    started = time.perf_counter()
    ov.study.get_trials(deepcopy=False)
    ov.cold_ms = 1e3 * (time.perf_counter() - started)


def storage_trial(ov: OverheadStudy, trainer: Trainer, rng: random.Random) -> dict[str, float]:
    """One trial's storage work, by hpo-trainer's functions in ``_work``'s order; ms by phase."""
    from hpo_trainer.train import checkpoint
    from hpo_trainer.search import heartbeat as hb
    from hpo_trainer.search import engine as hs
    from hpo_trainer.search.pruning import FastReporter

    c, study, storage = ov.search_cfg, ov.study, ov.storage
    assert ov.sampler_clock is not None
    ov.sampler_clock.total = 0.0
    t0 = time.perf_counter()
    with ov.lock:  # search._work
        if c.heartbeat_interval and isinstance(storage, optuna.storages.RDBStorage):
            optuna.storages.fail_stale_trials(study)
            hb.fail_silent_trials(study, storage, 3 * c.grace_period)
        trials = study.get_trials(deepcopy=False)
        done = sum(1 for t in trials if t.state in DONE)
        running = sum(1 for t in trials if t.state == TrialState.RUNNING)
        if done >= c.n_trials or hs._failures(trials) >= c.max_failures:
            raise RuntimeError("the overhead study's budget is spent")
        trial = hs._ask(study) if done + running < c.n_trials else None
        if trial is None:
            raise RuntimeError("no room in the overhead study's budget")
        if c.heartbeat_interval:
            hb.beat(storage, trial._trial_id)
    t1 = time.perf_counter()
    root = hs._root_number(trial)  # search._run_trial
    trial.set_user_attr("worker", 0)
    trial.set_user_attr("host", platform.node())
    for space in trainer.spaces.values():
        space.suggest(trial)
    t2 = time.perf_counter()
    reporter = FastReporter(study, trial)
    curve = _curve(rng, c.epochs)
    for step, value in curve.items():  # PruningCallback.on_epoch_end
        reporter.report(value, step)
        if reporter.should_prune():
            raise RuntimeError("NopPruner pruned a trial")
    t3 = time.perf_counter()
    folder = hs.trial_dir(c, root)  # the trial's own checkpoint (untimed: not storage)
    checkpoint.save({"w": torch.zeros(4)}, folder / "last.pt", durable=False)
    best = min(curve, key=lambda s: curve[s])
    attrs = {
        "device": "cpu",
        "best_epoch": best,
        "epochs": c.epochs,
        "wall_time": 0.1,
        "checkpoint": str(folder / "last.pt"),
    }
    t4 = time.perf_counter()
    for key, val in attrs.items():
        trial.set_user_attr(key, val)
    study.tell(trial, curve[best])
    t5 = time.perf_counter()
    hs._cleanup_checkpoints(study, c)
    t6 = time.perf_counter()
    sample = {
        "loop": t1 - t0,
        "start": t2 - t1,
        "epochs": t3 - t2,
        "tell": t5 - t4,
        "cleanup": t6 - t5,
        "sampler": ov.sampler_clock.total,
    }
    sample = {k: 1e3 * v for k, v in sample.items()}
    sample["total"] = sum(v for k, v in sample.items() if k != "sampler")
    sample["storage"] = sample["total"] - sample["sampler"]
    return sample


def local_trial_seconds(trainer: Trainer, folder: Path, epochs: int, seed: int) -> float:
    """One trial's training as ``_run_trial`` does it, with no storage: build, fit with the
    checkpoint and TensorBoard callbacks."""
    from hpo_trainer.train.callbacks import CheckpointCallback, TensorBoardCallback

    values = trainer.resolve_params({"optimizer.lr": 0.01})
    started = time.perf_counter()
    run = trainer.build(values, epochs=epochs, seed=seed, with_test=False)
    board = TensorBoardCallback(folder, hparams={"optimizer.lr": 0.01})
    callbacks = [CheckpointCallback(folder, every=1, filename="last.pt", durable=False), board]
    try:
        trainer.fit(run, callbacks)
    finally:
        board.on_fit_end(run.state)
    return time.perf_counter() - started


def real_loop(ov: OverheadStudy, trainer: Trainer, n: int, log: Path) -> list[float]:
    """Run ``n`` more trials with the real ``run_worker``; return their start-to-start gaps."""
    from hpo_trainer.search.engine import run_worker

    existing = {t.number for t in ov.study.get_trials(deepcopy=False)}
    done = sum(1 for t in ov.study.get_trials(deepcopy=False) if t.state in DONE)
    cfg = dataclasses.replace(ov.search_cfg, n_trials=done + n)
    with stderr_to(log), torch_threads(1):
        run_worker(trainer, cfg, worker=0)
    storage = open_study_storage(ov.url)
    try:
        trials = optuna.load_study(study_name=ov.name, storage=storage).get_trials(deepcopy=False)
    finally:
        close_storage(storage)
    new = sorted(
        (t for t in trials if t.number not in existing and t.state in DONE),
        key=lambda t: t.datetime_start,
    )
    starts = [t.datetime_start for t in new]
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]
    ov.inside += [(t.datetime_complete - t.datetime_start).total_seconds() for t in new]
    return gaps


def bench_overhead(cfg: Config, tmp: Path, pg_url: str | None) -> list[Result]:
    """Part 2: one trial's storage work at 100 vs 2,000 finished trials in the study."""
    from hpo_trainer.studyfile import load_trainer_from_file

    tmp.mkdir(parents=True)
    log = tmp / "overhead.log"
    why_not_pg = pg_reachable(pg_url)
    kinds = ["sqlite"] + (["postgresql"] if why_not_pg is None else [])
    if why_not_pg is not None:
        print(f"  PostgreSQL skipped: {why_not_pg}")
    trainer = load_trainer_from_file(THIS, runs_dir=str(tmp / "runs"), quiet=True)
    _pay_one_off_costs()
    small, large = cfg.ov_sizes
    results: list[Result] = []
    rows, loop_rows = [], []
    studies: list[OverheadStudy] = []
    try:
        for kind in kinds:
            by_size: dict[int, OverheadStudy] = {}
            for size in (small, large):
                ov = build_overhead_study(kind, size, trainer, cfg, tmp, pg_url)
                studies.append(ov)
                by_size[size] = ov
                open_for_work(ov, trainer)
            rng = random.Random(7)
            for _ in range(cfg.ov_warm):
                for ov in by_size.values():
                    storage_trial(ov, trainer, rng)
            for i in range(cfg.ov_timed):
                for size in (small, large) if i % 2 == 0 else (large, small):
                    by_size[size].samples.append(storage_trial(by_size[size], trainer, rng))
            # Cross-check with the real worker loop, interleaved in two halves.
            gaps: dict[int, list[float]] = {small: [], large: []}
            local: list[float] = []
            half = max(2, cfg.ov_loop // 2)
            with torch_threads(1):  # untimed: the first call pays TensorBoard's set-up
                local_trial_seconds(trainer, tmp / "local", cfg.ov_epochs, seed=0)
            for order in ((small, large), (large, small)):
                for size in order:
                    gaps[size] += real_loop(by_size[size], trainer, half, log)
                    with torch_threads(1):
                        local.append(
                            local_trial_seconds(
                                trainer, tmp / "local", cfg.ov_epochs, seed=len(local)
                            )
                        )
            local_s = median(local)
            for size in (small, large):
                ov = by_size[size]
                s = ov.samples
                row = [f"{kind}, {size} trials"]
                row += [fmt(median([x[p] for x in s]), ".2f") for p in PHASES]
                row += [
                    fmt(median([x["total"] for x in s]), ".2f"),
                    fmt(median([x["storage"] for x in s]), ".2f"),
                    fmt(min(x["total"] for x in s), ".2f"),
                    fmt(ov.cold_ms, ".0f"),
                    fmt(ov.built_s, ".1f"),
                ]
                rows.append(row)
                cycle = median(gaps[size])
                inside = median(ov.inside)
                loop_rows.append(
                    [
                        f"{kind}, {size}+ trials",
                        len(gaps[size]),
                        fmt(1e3 * cycle, ".1f"),
                        fmt(1e3 * inside, ".1f"),
                        fmt(1e3 * (cycle - inside), ".1f"),
                        fmt(1e3 * local_s, ".1f"),
                        fmt(1e3 * (cycle - local_s), ".1f"),
                    ]
                )
                ov.loop_overhead_ms = 1e3 * (cycle - local_s)
            a, b = by_size[small], by_size[large]
            tot = {ov.size: median([x["total"] for x in ov.samples]) for ov in (a, b)}
            sto = {ov.size: median([x["storage"] for x in ov.samples]) for ov in (a, b)}
            r_tot, r_sto = ratio(tot[large], tot[small]), ratio(sto[large], sto[small])
            r_loop = ratio(b.loop_overhead_ms, a.loop_overhead_ms)
            note = "" if cfg.ov_timed >= FULL.ov_timed else f", quick: {cfg.ov_timed} trials"
            results += [
                Result(f"overhead_{kind}_ms_at_{small}", tot[small], ".2f", "none", True),
                Result(f"overhead_{kind}_ms_at_{large}", tot[large], ".2f", "none", True),
                Result(
                    f"overhead_{kind}_ratio",
                    r_tot,
                    ".2f",
                    f"<= {OVERHEAD_RATIO_TARGET}, {large} / {small} trials, storage work "
                    f"incl. TPE's sampling{note}",
                    r_tot <= OVERHEAD_RATIO_TARGET,
                ),
                Result(
                    f"overhead_{kind}_ratio_without_sampler",
                    r_sto,
                    ".2f",
                    f"<= {OVERHEAD_RATIO_TARGET}, {large} / {small} trials, TPE's time left "
                    f"out{note}",
                    r_sto <= OVERHEAD_RATIO_TARGET,
                ),
                Result(
                    f"overhead_{kind}_ratio_real_loop",
                    r_loop,
                    ".2f",
                    "none, cross-check: run_worker cycle - local training",
                    True,
                ),
            ]
    finally:
        for ov in studies:
            close_storage(ov.storage)
            if ov.kind == "postgresql":
                delete_pg_study(ov.url, ov.name)
    print_table(
        f"overhead: ms of storage work per trial (medians of {cfg.ov_timed} timed trials per "
        f"study after {cfg.ov_warm} untimed, interleaved), {cfg.ov_epochs} epochs, pruner "
        "none, TPE; loop: budget lock + fail_stale_trials + _fail_silent_trials + "
        "get_trials + ask + first heartbeat; sampler: TPE's methods (at the first suggest, "
        "and in tell), inside the other columns; start: _root_number + worker/host attrs + "
        "suggest; epochs: FastReporter + report + should_prune x epochs; tell: 5 "
        "set_user_attr + tell; cleanup: _cleanup_checkpoints; no sampler: total - sampler; "
        "cold ms: a fresh worker's first get_trials; built s: building the study",
        [
            "study",
            "loop",
            "sampler",
            "start",
            "epochs",
            "tell",
            "cleanup",
            "total ms",
            "no sampler",
            "min total",
            "cold ms",
            "built s",
        ],
        rows,
    )
    print_table(
        "overhead cross-check: the real worker loop (run_worker in this process, 1 torch "
        "thread) continuing each study; cycle: median start-to-start of consecutive trials; "
        "inside: median trial start to end; between: cycle - inside (clean-up, lock, "
        "get_trials, the start of ask); local: the same training without storage (build + "
        "fit with checkpoint and TensorBoard callbacks), median; overhead: cycle - local",
        ["study", "gaps", "cycle ms", "inside ms", "between ms", "local ms", "overhead ms"],
        loop_rows,
    )
    if why_not_pg is not None:
        results.append(Result("overhead_postgresql", None, "", f"skipped: {why_not_pg}", False))
    return results


# -- main ----------------------------------------------------------------------------------

BENCHES: dict[str, Callable[[Config, Path, str | None], list[Result]]] = {
    "throughput": bench_throughput,
    "overhead": bench_overhead,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts, print their tables and the RESULT lines; always return 0."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, ~2 minutes")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(BENCHES),
        metavar="NAME",
        help=f"run only this part (repeatable): {', '.join(BENCHES)}",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("HPO_BENCH_PG_URL", DEFAULT_PG_URL),
        help="PostgreSQL URL for the postgresql cells, or 'none' to skip them",
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    pg_url = None if args.pg_url.lower() == "none" else args.pg_url
    parts = list(dict.fromkeys(args.only or BENCHES))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    mode = "quick" if args.quick else "full"
    return run_parts(
        f"bench_scaleout ({mode})", parts, lambda name, folder: BENCHES[name](cfg, folder, pg_url)
    )


if __name__ == "__main__":
    sys.exit(main())
