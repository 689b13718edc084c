"""Benchmark scale-out: trials per minute by storage and worker count, and how the storage
work of one trial grows with the size of the study.

``throughput``
    Trials per minute and errors of ``search(n_workers=W)`` for W = 1, 2, 4, 8 on (a) a
    SQLite file as hpo-trainer tunes it, (b) a journal file and (c) PostgreSQL (``--pg-url``;
    a unique study per search, deleted afterwards). The trials are tiny on purpose
    (``synthetic_study.py``, size ``tiny``: ~1-2 ms an epoch, 20 epochs, no pruning), so the
    storage, the checkpoints and the worker loop dominate. One worker runs in this process
    (warmed up, one torch thread); spawned workers pay their one-off costs in the study file
    and wait at a start barrier, so that the trials' span (first start to last end, the main
    figure) measures W workers running together. Errors: failed trials, trials left running,
    finished trials other than the budget, workers that died, exceptions, and tracebacks in
    the workers' log.
``overhead``
    The storage work of one trial at 100 and at 2,000 finished trials in the study (SQLite,
    and PostgreSQL): the studies are created by ``make_config`` + ``create_study`` and
    filled with finished trials of 20 epochs (plus a trial folder each and the checkpoints
    of the 3 best, as a search leaves them); then ``run_worker`` continues each study for a
    few trials at a time, interleaved. A trial's storage work is the worker's start-to-start
    cycle (trial start stamps in the study) minus the same trial trained locally
    (``Trainer.build`` + ``fit`` with the checkpoint and TensorBoard callbacks a trial uses,
    no storage). TPE's share (its methods timed on the sampler object the config carries) is
    shown apart: it is compute that grows with the study, not storage work.

Run:
    .venv/bin/python benchmarks/bench_scaleout.py              # full run, ~5 minutes idle
    .venv/bin/python benchmarks/bench_scaleout.py --quick      # smoke test, ~1-2 minutes
    .venv/bin/python benchmarks/bench_scaleout.py --only overhead --pg-url none

PostgreSQL comes from ``--pg-url`` (default ``$HPO_BENCH_PG_URL`` or the local server); if it
cannot be reached its cells are skipped and said so.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from hpo_trainer.search.config import make_config
from hpo_trainer.search.storage import open_storage
from hpo_trainer.search.strategies import make_sampler
from hpo_trainer.search.study import create_study
from hpo_trainer.search.trial import trial_dir
from hpo_trainer.search.worker import run_worker
from hpo_trainer.studyfile import load_trainer_from_file
from hpo_trainer.train import checkpoint
from hpo_trainer.train.callbacks import CheckpointCallback, TensorBoardCallback

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _shared as sh  # noqa: E402
from synthetic_study import pay_one_off_costs  # noqa: E402

STUDY = HERE / "synthetic_study.py"
OVERHEAD_RATIO_TARGET = 1.5  # ms per trial at 2,000 / at 100 finished trials, at most
EPOCHS = 20
SIZES = {  # full, quick
    "throughput": ((40, ((1, 3), (2, 2), (4, 2), (8, 1))), (10, ((1, 1), (2, 1), (8, 1)))),
    "overhead": ((3, 10), (2, 4)),  # rounds, trials per round and study
}


def kinds_and_url(
    args: argparse.Namespace, kinds: tuple[str, ...]
) -> tuple[list[str], str | None]:
    """The storage kinds to run (PostgreSQL only if reachable) and the PostgreSQL URL."""
    pg_url = None if args.pg_url.lower() == "none" else args.pg_url
    problem = sh.pg_problem(pg_url) if "postgresql" in kinds else None
    if problem:
        print(f"  PostgreSQL skipped: {problem}")
    return [k for k in kinds if k != "postgresql" or not problem], pg_url


def url_for(kind: str, folder: Path, pg_url: str | None) -> str:
    """The storage URL of ``kind`` for files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    urls = {"sqlite": f"sqlite:///{folder / 'study.db'}", "journal": f"journal:{folder / 'j.log'}"}
    return urls.get(kind) or str(pg_url)


# -- throughput -----------------------------------------------------------------------------


def tpm_span(r: sh.SearchRun) -> float:
    """Finished trials per minute over the trials' span."""
    return sh.ratio(60 * r.trials, r.span)


COLUMNS: list[tuple[Callable[[sh.SearchRun], float], str]] = [
    (lambda r: r.wall, ".1f"), (lambda r: r.head, ".1f"), (lambda r: r.span, ".2f"),
    (lambda r: r.tail, ".2f"), (tpm_span, ".0f"), (lambda r: 60 * r.trials / r.wall, ".0f"),
    (lambda r: 1e3 * r.median_trial, ".0f"), (lambda r: r.ms_per_epoch, ".2f"),
]  # fmt: skip


@dataclass
class Cell:
    """One timed search: what it did and what went wrong."""

    run: sh.SearchRun
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def n_errors(self) -> int:
        """Everything that went wrong."""
        return sum(self.errors.values())


def one_search(
    kind: str, workers: int, n_trials: int, epochs: int, tmp: Path, pg_url: str | None
) -> Cell:
    """Run one search of tiny trials through ``search()`` and count its errors."""
    name = f"bench_scaleout_{kind}_w{workers}_{uuid.uuid4().hex[:10]}"
    folder = tmp / name
    url, log = url_for(kind, folder, pg_url), tmp / "workers.log"
    barrier = {"barrier": str(folder / "barrier"), "parties": workers} if workers > 1 else {}
    trainer = load_trainer_from_file(
        STUDY, size="tiny", runs_dir=str(folder / "runs"), quiet=True, **barrier
    )
    mark = log.stat().st_size if log.exists() else 0
    errors = {}
    try:
        with sh.torch_threads(1) if workers == 1 else contextlib.nullcontext():
            run, outcome = sh.timed_search(
                trainer, log, epochs=epochs, n_trials=n_trials, n_workers=workers,
                storage=url, study_name=name, pruner="none", seed=0,
            )  # fmt: skip
        errors["exit"] = len(outcome.dead_workers)
    except Exception as exc:  # counted as an error of the cell; the bench goes on
        print(f"  error: {type(exc).__name__}: {exc}")
        run, errors["exc"] = sh.SearchRun(), 1
    finally:
        if kind == "postgresql":
            sh.delete_study(url, name)
    with open(log, "rb") as f:
        f.seek(mark)
        errors["tb"] = f.read().decode(errors="replace").count("Traceback (most recent")
    errors |= {"fail": run.failed, "left": run.left, "budget": abs(run.trials - n_trials)}
    return Cell(run, {k: v for k, v in errors.items() if v})


def bench_throughput(args: argparse.Namespace, tmp: Path) -> list[sh.Result]:
    """Part ``throughput``: trials per minute and errors, storage x workers."""
    n_trials, plan = SIZES["throughput"][bool(args.quick)]
    kinds, pg_url = kinds_and_url(args, ("sqlite", "journal", "postgresql"))
    pay_one_off_costs()
    for kind in kinds:  # untimed: this process's one-off costs per storage
        one_search(kind, 1, 2, 2, tmp / "warm", pg_url)
    counts = [w for w, _ in plan]
    cells: dict[tuple[str, int], list[Cell]] = {(k, w): [] for k in kinds for w in counts}
    for rnd in range(max(r for _, r in plan)):
        due = [w for w, rounds in plan if rounds > rnd]
        for i, workers in enumerate(due if rnd % 2 == 0 else due[::-1]):
            shift = (rnd + i) % len(kinds)  # the storages in a rotating order
            for kind in kinds[shift:] + kinds[:shift]:
                cell = one_search(kind, workers, n_trials, EPOCHS, tmp, pg_url)
                cells[(kind, workers)].append(cell)
                r = cell.run
                print(
                    f"  [round {rnd + 1}: {kind:10s} {workers} worker(s): {r.trials} trials, "
                    f"wall {r.wall:.1f} s, span {r.span:.1f} s, errors {cell.errors or 0}]",
                    flush=True,
                )

    def med(kind: str, w: int, get: Callable[[sh.SearchRun], float]) -> float:
        return sh.median(v for c in cells[(kind, w)] if not math.isnan(v := get(c.run)))

    rows = []
    for (kind, w), cs in cells.items():
        errs: dict[str, int] = {}
        for c in cs:
            errs |= {k: errs.get(k, 0) + v for k, v in c.errors.items()}
        rows.append(
            [kind, w, "/".join(str(c.run.trials) for c in cs), sum(errs.values()) or "0"]
            + [sh.fmt(med(kind, w, get), spec) for get, spec in COLUMNS]
            + [
                "/".join(
                    f"{min(c.run.per_worker.values(), default=0)}-"
                    f"{max(c.run.per_worker.values(), default=0)}"
                    for c in cs
                )
            ]
            + [", ".join(f"{k} {v}" for k, v in errs.items())]
        )
    sh.print_table(
        f"throughput: {n_trials} trials x {EPOCHS} epochs per search (tiny MLP, pruner none, "
        f"TPE), workers x rounds: {', '.join(f'{w} x {r}' for w, r in plan)}, medians over "
        "rounds; span: first trial start to last trial end; head: call start to first trial "
        "start; tail: last trial end to call end; ms/trial: median trial (each process's first "
        "left out); per worker: fewest-most trials of a worker",
        ["storage", "workers", "trials", "errors", "wall s", "head s", "span s", "tail s"]
        + ["trials/min (span)", "trials/min (wall)", "ms/trial", "ms/epoch", "per worker"]
        + ["what"],
        rows,
    )
    sh.print_table(
        "throughput, storage x workers: trials per minute over the trials' span (main figure)",
        ["storage", *(f"{w} worker(s)" for w in counts)],
        [[kind, *(sh.fmt(med(kind, w, tpm_span), ".0f") for w in counts)] for kind in kinds],
    )
    total = sum(c.n_errors for cs in cells.values() for c in cs)
    searches = sum(len(cs) for cs in cells.values())
    results = [
        sh.Result("throughput_errors", total, "d", f"0, over {searches} searches", total == 0)
    ]
    note = "" if not args.quick else f", quick: {n_trials} trials"
    for kind in kinds:
        spans = {w: v for w in counts if not math.isnan(v := med(kind, w, tpm_span))}
        best = max(spans, key=lambda w: spans[w]) if spans else None
        results.append(
            sh.Result(
                f"throughput_{kind}_best_trials_per_min",
                spans[best] if best else None,
                ".0f",
                f"none: span-based, best at {best} worker(s){note}",
                best is not None,
            )
        )
        if 1 in spans and 2 in spans:
            results.append(
                sh.Result(f"throughput_{kind}_2w_over_1w", sh.ratio(spans[2], spans[1]), ".2f")
            )
    if "postgresql" not in kinds:
        results.append(sh.Result("throughput_postgresql", None, "", "skipped", False))
    return results


# -- overhead -------------------------------------------------------------------------------


class SamplerClock:
    """Times a sampler object's methods (outermost calls only), in ``total`` seconds."""

    METHODS = ("infer_relative_search_space", "sample_relative", "sample_independent")
    METHODS += ("before_trial", "after_trial")

    def __init__(self, sampler: optuna.samplers.BaseSampler) -> None:
        self.sampler, self.total, self._depth = sampler, 0.0, 0
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
class Filled:
    """A study filled with finished trials, and what its timed trials showed."""

    cfg: Any
    url: str
    clock: SamplerClock
    storage: Any
    study: optuna.Study  # read through Optuna's cache: only new trials are fetched
    built_s: float
    cycles: list[float] = field(default_factory=list)  # start-to-start, s
    sampler: list[float] = field(default_factory=list)  # TPE's seconds per trial


def fill(kind: str, size: int, trainer: Any, tmp: Path, pg_url: str | None) -> Filled:
    """Create a study through ``make_config`` + ``create_study`` with ``size`` finished
    trials, a trial folder each and the best 3 checkpoints, as a search leaves it."""
    started = time.perf_counter()
    name = f"bench_scaleout_ov_{kind}_{size}_{uuid.uuid4().hex[:10]}"
    url = url_for(kind, tmp / name, pg_url)
    sampler = SamplerClock(make_sampler("tpe", seed=0, spaces=trainer.spaces))
    cfg = make_config(
        trainer,
        epochs=EPOCHS,
        n_trials=size,
        study_name=name,
        storage=url,
        pruner="none",
        seed=0,
        sampler=sampler.sampler,
    )  # fmt: skip
    probe = optuna.create_study().ask()  # the space's Optuna distributions
    for space in trainer.spaces.values():
        space.suggest(probe)
    n0 = 100 if size % 100 == 0 else size
    template = sh.finished_trials(probe.distributions, n0, EPOCHS, Path(cfg.runs_dir) / name, size)
    trials = sh.fill_study(create_study(cfg), url, template, size)
    for t in trials:
        trial_dir(cfg, t.number).mkdir(parents=True, exist_ok=True)
    for t in sorted(trials, key=lambda t: t.value)[: cfg.keep_checkpoints]:
        checkpoint.save({"w": torch.zeros(4)}, trial_dir(cfg, t.number) / "last.pt")
    storage = open_storage(url, heartbeat_interval=None)
    study = optuna.load_study(study_name=name, storage=storage)
    study.get_trials(deepcopy=False)
    return Filled(cfg, url, sampler, storage, study, time.perf_counter() - started)


def continue_study(f: Filled, trainer: Any, n: int, log: Path) -> None:
    """Run ``n`` more trials on the study with ``run_worker``; record their cycles."""
    before = len(f.study.get_trials(deepcopy=False))
    f.clock.total = 0.0
    cfg = dataclasses.replace(f.cfg, n_trials=before + n)
    with sh.stderr_to(log), sh.torch_threads(1):
        run_worker(trainer, cfg)
    new = sorted(
        f.study.get_trials(deepcopy=False)[before:],
        key=lambda t: t.datetime_start,
    )
    starts = [t.datetime_start for t in new]
    f.cycles += [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]
    f.sampler.append(f.clock.total / max(1, len(new)))


def local_trial(trainer: Any, folder: Path, seed: int) -> float:
    """Seconds of one trial's training without storage: build, fit with the checkpoint and
    TensorBoard callbacks a trial uses."""
    values = trainer.resolve_params({"optimizer.lr": 0.01})
    started = time.perf_counter()
    with sh.torch_threads(1):
        run = trainer.build(values, epochs=EPOCHS, seed=seed, with_test=False)
        board = TensorBoardCallback(folder, hparams={"optimizer.lr": 0.01})
        ckpt = CheckpointCallback(folder, every=1, filename="last.pt", durable=False)
        try:
            trainer.fit(run, [ckpt, board])
        finally:
            board.on_fit_end(run.state)
    return time.perf_counter() - started


def bench_overhead(args: argparse.Namespace, tmp: Path) -> list[sh.Result]:
    """Part ``overhead``: one trial's storage work at 100 vs 2,000 finished trials."""
    rounds, per_round = SIZES["overhead"][bool(args.quick)]
    kinds, pg_url = kinds_and_url(args, ("sqlite", "postgresql"))
    # One batch an epoch: the less training, the less noise in cycle - local.
    trainer = load_trainer_from_file(
        STUDY, size="tiny", n_train=64, runs_dir=str(tmp / "runs"), quiet=True
    )
    log, small, large = tmp / "overhead.log", 100, 2000
    results, rows = [], []
    for kind in kinds:
        studies = {n: fill(kind, n, trainer, tmp, pg_url) for n in (small, large)}
        try:
            local = [local_trial(trainer, tmp / "local", 0)]  # untimed: TensorBoard's set-up
            for f in studies.values():  # untimed: the first clean-up of the trial folders
                continue_study(f, trainer, 1, log)
                f.cycles.clear()
                f.sampler.clear()
            local.clear()
            for rnd in range(rounds):
                for n in (small, large) if rnd % 2 == 0 else (large, small):
                    continue_study(studies[n], trainer, per_round, log)
                    local += [local_trial(trainer, tmp / "local", i) for i in range(2)]
        finally:
            for f in studies.values():
                sh.dispose(f.storage)
                if kind == "postgresql":
                    sh.delete_study(f.url, f.cfg.study_name)
        ms = {n: 1e3 * (sh.median(f.cycles) - sh.median(local)) for n, f in studies.items()}
        tpe = {n: 1e3 * sh.median(f.sampler) for n, f in studies.items()}
        for n, f in studies.items():
            rows.append(
                [f"{kind}, {n} trials", len(f.cycles), sh.fmt(1e3 * sh.median(f.cycles))]
                + [sh.fmt(1e3 * sh.median(local)), sh.fmt(ms[n], ".2f"), sh.fmt(tpe[n], ".2f")]
                + [sh.fmt(ms[n] - tpe[n], ".2f"), sh.fmt(f.built_s)]
            )
        r_all, r_storage = (
            sh.ratio(ms[large], ms[small]),
            sh.ratio(ms[large] - tpe[large], ms[small] - tpe[small]),
        )
        note = "" if not args.quick else f", quick: {rounds * per_round} trials"
        results += [
            sh.Result(f"overhead_{kind}_ms_at_{small}", ms[small], ".2f"),
            sh.Result(f"overhead_{kind}_ms_at_{large}", ms[large], ".2f"),
            sh.Result(
                f"overhead_{kind}_ratio",
                r_all,
                ".2f",
                f"<= {OVERHEAD_RATIO_TARGET}, {large} / {small} trials, incl. TPE{note}",
                r_all <= OVERHEAD_RATIO_TARGET,
            ),
            sh.Result(
                f"overhead_{kind}_ratio_without_sampler",
                r_storage,
                ".2f",
                f"<= {OVERHEAD_RATIO_TARGET}, {large} / {small} trials, TPE left out{note}",
                r_storage <= OVERHEAD_RATIO_TARGET,
            ),
        ]  # fmt: skip
    sh.print_table(
        f"overhead: a trial's storage work, run_worker continuing each study ({rounds} "
        f"interleaved rounds of {per_round} trials x {EPOCHS} epochs, pruner none, TPE, 1 torch "
        "thread); cycle: median start-to-start of consecutive trials; local: the same "
        "training without storage (build + fit with checkpoint and TensorBoard callbacks); "
        "storage: cycle - local; TPE: its methods' time per trial (inside storage)",
        ["study", "cycles", "cycle ms", "local ms", "storage ms", "TPE ms", "without TPE"]
        + ["built s"],
        rows,
    )
    if "postgresql" not in kinds:
        results.append(sh.Result("overhead_postgresql", None, "", "skipped", False))
    return results


def options(parser: argparse.ArgumentParser) -> None:
    """This benchmark's own options."""
    default = os.environ.get("HPO_BENCH_PG_URL", sh.DEFAULT_PG_URL)
    parser.add_argument("--pg-url", default=default, help="PostgreSQL URL, or 'none' to skip it")


if __name__ == "__main__":
    parts = {"throughput": bench_throughput, "overhead": bench_overhead}
    sys.exit(sh.main(__doc__ or "", parts, extra=options))
