"""Benchmark scale-out: ``throughput``, trials per minute and errors of ``search(n_workers=W)``
on SQLite, a journal file and PostgreSQL with tiny trials (workers start together at a
barrier; the trials' span is the main figure); ``overhead``, the storage work of one trial
continued by ``run_worker`` in studies of 100 and 2,000 finished trials: the trials' cycle
minus the same training locally, TPE's share apart.

Run: .venv/bin/python benchmarks/bench_scaleout.py [--quick] [--only PART] [--pg-url URL|none]
(default ``$HPO_BENCH_PG_URL`` or the local server; PostgreSQL is skipped if unreachable).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import functools
import math
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from hpo_trainer.facade.studyfile import load_trainer_from_file
from hpo_trainer.search.config import make_config
from hpo_trainer.search.strategies import make_sampler
from hpo_trainer.search.study import create_study
from hpo_trainer.search.trial import trial_dir
from hpo_trainer.search.worker import run_worker
from hpo_trainer.train import checkpoint
from hpo_trainer.train.callbacks import CheckpointCallback, TensorBoardCallback

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _shared as sh  # noqa: E402
from synthetic_study import pay_one_off_costs  # noqa: E402

STUDY = HERE / "synthetic_study.py"
OVERHEAD_RATIO_TARGET = 1.5  # ms per trial at the large / at the small study, at most
EPOCHS = 20
SIZES = {  # full, quick
    "throughput": ((40, {1: 3, 2: 2, 4: 2, 8: 1}), (10, {1: 1, 2: 1, 8: 1})),  # workers: rounds
    "overhead": ((3, 10, 2000), (2, 4, 500)),  # rounds, trials per round, large study
}


def usable(args: argparse.Namespace, kinds: tuple[str, ...]) -> list[str]:
    """The storage kinds to run: PostgreSQL only if reachable."""
    problem = "--pg-url none"
    if args.pg_url:
        try:
            sh.dispose(sh.open_storage(args.pg_url))
            return list(kinds)
        except Exception as exc:  # any driver or connection problem: skip PostgreSQL
            problem = f"{type(exc).__name__}: {exc}".splitlines()[0]
    print(f"  PostgreSQL skipped: {problem}")
    return [k for k in kinds if k != "postgresql"]


def url_for(kind: str, folder: Path, pg_url: str | None) -> str:
    """The storage URL of ``kind`` for files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    urls = {"sqlite": f"sqlite:///{folder / 'study.db'}", "journal": f"journal:{folder / 'j.log'}"}
    return urls.get(kind) or str(pg_url)


# wall, head, span, tail, trials/min over the span and over the wall, ms/trial, ms/epoch
SPECS = (".1f", ".1f", ".2f", ".2f", ".0f", ".0f", ".0f", ".2f")
Cell = tuple[sh.SearchRun, dict[str, int]]  # a search and its errors by kind


def figures(r: sh.SearchRun) -> tuple[float, ...]:
    """The throughput table's figures of one search, in the order of ``SPECS``."""
    per_min = (sh.ratio(60 * r.trials, r.span), sh.ratio(60 * r.trials, r.wall))
    return (r.wall, r.head, r.span, r.tail, *per_min, 1e3 * r.median_trial, r.ms_per_epoch)


def one_search(
    kind: str, workers: int, n_trials: int, tmp: Path, pg_url: str | None, epochs: int = EPOCHS
) -> Cell:
    """Run one search of tiny trials through ``search()``; return it and its errors."""
    name = f"bench_scaleout_{kind}_w{workers}_{uuid.uuid4().hex[:10]}"
    folder, log = tmp / name, tmp / "workers.log"
    url = url_for(kind, folder, pg_url)
    study = {"size": "tiny", "barrier": str(folder / "barrier"), "parties": workers}
    options = {"n_trials": n_trials, "n_workers": workers, "study_name": name, "pruner": "none"}
    mark, errors = log.stat().st_size if log.exists() else 0, {}
    threads = 1 if workers == 1 else None
    try:
        run, outcome = sh.timed_search(
            STUDY, log, threads, study, epochs=epochs, storage=url, seed=0, **options
        )
        errors["exit"] = len(outcome.dead_workers)
    except Exception as exc:  # counted as an error of the search; the bench goes on
        print(f"  error: {type(exc).__name__}: {exc}")
        run, errors["exc"] = sh.summarise([], datetime.datetime.now(), math.nan, workers), 1
    finally:
        if kind == "postgresql":
            sh.delete_study(url, name)
    with open(log, "rb") as f:
        f.seek(mark)
        errors["tb"] = f.read().decode(errors="replace").count("Traceback (most recent")
    errors |= {"fail": run.failed, "left": run.left, "budget": abs(run.trials - n_trials)}
    return run, {k: v for k, v in errors.items() if v}


def bench_throughput(args: argparse.Namespace, tmp: Path) -> list[str]:
    """Part ``throughput``: trials per minute and errors, storage x workers."""
    n_trials, plan = SIZES["throughput"][args.quick]
    kinds = usable(args, ("sqlite", "journal", "postgresql"))
    pay_one_off_costs()
    for kind in kinds:  # untimed: this process's one-off costs per storage
        one_search(kind, 1, 2, tmp / "warm", args.pg_url, epochs=2)
    search = functools.partial(one_search, n_trials=n_trials, tmp=tmp, pg_url=args.pg_url)
    cells = sh.interleave(
        {(k, w): functools.partial(search, k, w) for k in kinds for w in plan},
        {(k, w): rounds for k in kinds for w, rounds in plan.items()},
    )
    rows, tpm = [], {}
    for (kind, w), got in cells.items():
        errs = sum((collections.Counter(e) for _, e in got), collections.Counter[str]())
        meds = [sh.median(column) for column in zip(*(figures(r) for r, _ in got))]
        tpm[kind, w] = meds[4]
        spread = [
            f"{min(r.per_worker.values(), default=0)}-{max(r.per_worker.values(), default=0)}"
            for r, _ in got
        ]
        rows.append(
            [kind, w, "/".join(str(r.trials) for r, _ in got), errs.total()]
            + [sh.fmt(m, spec) for m, spec in zip(meds, SPECS)]
            + ["/".join(spread), ", ".join(f"{k} {v}" for k, v in errs.items())]
        )
    sh.print_table(
        f"throughput: {n_trials} trials x {EPOCHS} epochs per search (tiny MLP, pruner none, "
        f"TPE), workers x rounds: {', '.join(f'{w} x {r}' for w, r in plan.items())}, medians "
        f"over rounds; {sh.SPANS}; ms/trial: median trial (each process's first left out); per "
        "worker: fewest-most trials of a worker",
        ["storage", "workers", "trials", "errors", "wall s", "head s", "span s", "tail s"]
        + ["trials/min (span)", "trials/min (wall)", "ms/trial", "ms/epoch", "per worker", "what"],
        rows,
    )
    sh.print_table(
        "throughput, storage x workers: trials per minute over the trials' span (main figure)",
        ["storage", *(f"{w} worker(s)" for w in plan)],
        [[kind, *(sh.fmt(tpm[kind, w], ".0f") for w in plan)] for kind in kinds],
    )
    total, searches = sum(row[3] for row in rows), sum(len(got) for got in cells.values())
    results = [
        sh.result("throughput_errors", total, "d", f"0, over {searches} searches", not total)
    ]
    note = "" if not args.quick else f", quick: {n_trials} trials"
    for kind in kinds:
        spans = {w: tpm[kind, w] for w in plan if not math.isnan(tpm[kind, w])}
        best = max(spans, key=spans.__getitem__, default=None)
        target, name = f"none: span-based, best at {best} worker(s){note}", f"throughput_{kind}"
        results.append(
            sh.result(f"{name}_best_trials_per_min", spans.get(best), ".0f", target, bool(spans))
        )
        if 1 in spans and 2 in spans:
            results.append(sh.result(f"{name}_2w_over_1w", spans[2] / spans[1], ".2f"))
    if "postgresql" not in kinds:
        results.append(sh.result("throughput_postgresql", None, "", "skipped", False))
    return results


TIMED = "infer_relative_search_space sample_relative sample_independent before_trial after_trial"


def clock_sampler(sampler: optuna.samplers.BaseSampler) -> list[float]:
    """Make the sampler's methods (none calls another) add their seconds to the list's item."""
    spent = [0.0]

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started

        return timed

    for name in TIMED.split():
        setattr(sampler, name, wrap(getattr(sampler, name)))
    return spent


@dataclass
class Filled:
    """A study filled with finished trials, ready to be continued."""

    cfg: Any
    tpe: list[float]  # the sampler's seconds so far
    storage: Any
    study: optuna.Study  # on ``storage``, to read the new trials
    built_s: float


def fill(kind: str, size: int, trainer: Any, tmp: Path, pg_url: str | None) -> Filled:
    """Create a study through ``make_config`` + ``create_study`` with ``size`` finished
    trials, a trial folder each and the best 3 checkpoints, as a search leaves it."""
    started = time.perf_counter()
    name = f"bench_scaleout_ov_{kind}_{size}_{uuid.uuid4().hex[:10]}"
    url, sampler = (
        url_for(kind, tmp / name, pg_url),
        make_sampler("tpe", seed=0, spaces=trainer.spaces),
    )
    options = {"study_name": name, "storage": url, "pruner": "none", "seed": 0, "sampler": sampler}
    cfg = make_config(trainer, epochs=EPOCHS, n_trials=size, **options)
    probe = optuna.create_study().ask()  # the space's Optuna distributions
    for space in trainer.spaces.values():
        space.suggest(probe)
    folder = Path(cfg.durability.runs_dir) / name
    template = sh.finished_trials(probe.distributions, 100, EPOCHS, folder, size)
    sh.fill_study(create_study(cfg), url, template, size)
    storage = sh.open_storage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        trial_dir(cfg, t.number).mkdir(parents=True, exist_ok=True)
    for t in sorted(trials, key=lambda t: t.value)[: cfg.durability.keep_checkpoints]:
        checkpoint.save({"w": torch.zeros(4)}, trial_dir(cfg, t.number) / "last.pt")
    return Filled(cfg, clock_sampler(sampler), storage, study, time.perf_counter() - started)


def continue_study(f: Filled, trainer: Any, n: int, log: Path) -> tuple[list[float], float]:
    """Run ``n`` more trials on the study with ``run_worker``; return the seconds from each
    new trial's start to the next one's, and TPE's seconds per trial."""
    before, f.tpe[0] = len(f.study.get_trials(deepcopy=False)), 0.0
    with sh.stderr_to(log), sh.torch_threads(1):
        budget = dataclasses.replace(f.cfg.budget, n_trials=before + n)
        run_worker(trainer, dataclasses.replace(f.cfg, budget=budget))
    starts = sorted(t.datetime_start for t in f.study.get_trials(deepcopy=False)[before:])
    cycles = [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]  # type: ignore[operator]
    return cycles, f.tpe[0] / max(1, len(starts))


def local_trial(trainer: Any, folder: Path, seed: int) -> float:
    """Seconds of a trial's training without storage (with the callbacks a trial uses)."""
    values, started = trainer.resolve_params({"optimizer.lr": 0.01}), time.perf_counter()
    with sh.torch_threads(1):
        run = trainer.build(values, epochs=EPOCHS, seed=seed, with_test=False)
        board = TensorBoardCallback(folder, hparams={"optimizer.lr": 0.01})
        ckpt = CheckpointCallback(folder, every=1, filename="last.pt", durable=False)
        try:
            trainer.fit(run, [ckpt, board])
        finally:
            board.on_fit_end(run.state)
    return time.perf_counter() - started


def overhead_of(kind: str, args: argparse.Namespace, tmp: Path) -> tuple[list[list], list[str]]:
    """The table rows and RESULT lines of one storage kind."""
    rounds, per_round, large = SIZES["overhead"][args.quick]
    small, log, folder, local = 100, tmp / "overhead.log", tmp / "local", []
    # One batch an epoch: the less training, the less noise in cycle - local.
    runs = str(tmp / "runs")
    trainer = load_trainer_from_file(STUDY, size="tiny", n_train=64, runs_dir=runs, quiet=True)
    studies = {n: fill(kind, n, trainer, tmp, args.pg_url) for n in (small, large)}

    def step(n: int) -> tuple[list[float], float]:
        cycles_and_tpe = continue_study(studies[n], trainer, per_round, log)
        local.extend(local_trial(trainer, folder, i) for i in range(2))
        return cycles_and_tpe

    try:
        local_trial(trainer, folder, 0)  # untimed: TensorBoard's set-up
        for f in studies.values():  # untimed: the first clean-up of the trial folders
            continue_study(f, trainer, 1, log)
        got = sh.interleave({n: functools.partial(step, n) for n in studies}, rounds)
    finally:
        for f in studies.values():
            sh.dispose(f.storage)
            if kind == "postgresql":
                sh.delete_study(f.cfg.identity.storage, f.cfg.identity.study_name)
    cycle = {n: 1e3 * sh.median(c for cs, _ in got[n] for c in cs) for n in got}
    tpe = {n: 1e3 * sh.median(s for _, s in got[n]) for n in got}
    ms = {n: cycle[n] - 1e3 * sh.median(local) for n in got}
    rows = [
        [f"{kind}, {n} trials", sum(len(cs) for cs, _ in got[n]), sh.fmt(cycle[n])]
        + [sh.fmt(1e3 * sh.median(local)), sh.fmt(ms[n], ".2f"), sh.fmt(tpe[n], ".2f")]
        + [sh.fmt(ms[n] - tpe[n], ".2f"), sh.fmt(f.built_s)]
        for n, f in studies.items()
    ]
    note = "" if not args.quick else f", quick: {rounds * per_round} trials"
    name, without = f"overhead_{kind}", sh.ratio(ms[large] - tpe[large], ms[small] - tpe[small])
    results = [sh.result(f"{name}_ms_at_{n}", ms[n], ".2f") for n in (small, large)]
    for suffix, r, what in (
        ("ratio", sh.ratio(ms[large], ms[small]), "incl. TPE"),
        ("ratio_without_sampler", without, "TPE left out"),
    ):
        target = f"<= {OVERHEAD_RATIO_TARGET}, {large} / {small} trials, {what}{note}"
        results.append(sh.result(f"{name}_{suffix}", r, ".2f", target, r <= OVERHEAD_RATIO_TARGET))
    return rows, results


def bench_overhead(args: argparse.Namespace, tmp: Path) -> list[str]:
    """Part ``overhead``: one trial's storage work in a small vs a large study."""
    rounds, per_round, _ = SIZES["overhead"][args.quick]
    kinds = usable(args, ("sqlite", "postgresql"))
    done = [overhead_of(kind, args, tmp) for kind in kinds]
    rows, results = [r for d, _ in done for r in d], [r for _, d in done for r in d]
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
        results.append(sh.result("overhead_postgresql", None, "", "skipped", False))
    return results


if __name__ == "__main__":
    parts = {"throughput": bench_throughput, "overhead": bench_overhead}
    sys.exit(sh.main(__doc__ or "", parts, pg=True))
