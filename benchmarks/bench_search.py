"""Benchmark the search: storage cost per epoch, worker scaling, the CLI, and pruning.

Every part interleaves its variants so that a busy machine slows them alike, and goes
through hpo-trainer's public phases only:

``storage``
    ms per reported epoch (``report`` + ``should_prune``) with median pruning on a SQLite
    study holding 1,000 finished trials of 20 epochs: (A) hpo-trainer's ``open_storage`` +
    ``make_pruner("median")`` + ``FastReporter`` (what a trial uses) against (B) Optuna's
    default (``load_study`` on the URL string, ``MedianPruner()``, ``trial.report`` and
    ``trial.should_prune``), on two copies of one database file.
``workers``
    Trials per minute of ``search(n_workers=2)`` against ``n_workers=1`` with
    compute-bound trials (``synthetic_study.py``, size ``wide``, no pruning). One worker runs
    in this process with one torch thread after a warm-up; each of two spawned workers gets
    one thread. The ratio on the wall time of the call, on the trials' span (first start to
    last end) and in the steady state (median trial, each process's first left out).
``cli``
    ``hpo-trainer search studies/digits_mlp.py --trials 40 --epochs 20 --workers 2`` as a
    subprocess against ``plain_optuna_digits.py``, the same search written by hand with
    plain Optuna (two processes of one torch thread).
``pruning``
    ``search()`` of the digits study with the default (sh.median) pruner against
    ``pruner="none"``, same budget and seed, one worker, for several seeds: the best val
    loss, and the epochs the pruned search trained as a share of the unpruned one's.

Run:
    .venv/bin/python benchmarks/bench_search.py              # full run, ~2-3 minutes idle
    .venv/bin/python benchmarks/bench_search.py --quick      # smoke test, ~40 s
    .venv/bin/python benchmarks/bench_search.py --only storage --only cli

Where a part repeats whole searches (``workers``, ``cli``), a RESULT uses the fastest round
of each variant, as other processes only ever slow a round down. Quick mode uses smaller
sizes, so its PASS/FAIL lines are indicative only.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from hpo_trainer.search.pruning import FastReporter
from hpo_trainer.search.storage import open_storage
from hpo_trainer.search.strategies import make_pruner
from hpo_trainer.studyfile import load_trainer_from_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _shared as sh  # noqa: E402
from synthetic_study import pay_one_off_costs  # noqa: E402

REPO = HERE.parent
DIGITS = REPO / "studies" / "digits_mlp.py"
STUDY = HERE / "synthetic_study.py"

STORAGE_TARGET_MS = 2.0  # (A) ms per reported epoch, at most
WORKERS_TARGET = 1.85  # 2-worker / 1-worker trials per minute, at least
CLI_TARGET_S = 15.0  # hpo-trainer search wall time, at most
PRUNE_LOSS_TARGET = 0.02  # pruned best / unpruned best - 1, at most
PRUNE_EPOCHS_TARGET = 0.40  # pruned epochs / unpruned epochs, at most
SIZES = {  # full, quick
    "storage_timed": (400, 100),  # timed report+should_prune cycles per variant
    "workers": ((10, 20, 2), (4, 6, 1)),  # trials, epochs, rounds
    "cli": ((40, 2), (12, 1)),  # trials, rounds
    "pruning": ((40, (0, 1, 2, 3, 4)), (20, (0,))),  # trials, seeds
}


def size(args: argparse.Namespace, part: str) -> Any:
    """This part's sizes in the mode asked for."""
    return SIZES[part][bool(args.quick)]


# -- storage --------------------------------------------------------------------------------

DISTS = {
    "optimizer.lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
    "model.hidden_size": optuna.distributions.CategoricalDistribution([16, 32, 64, 128]),
}


def time_trial(study: optuna.Study, values: dict[int, float], fast: bool) -> tuple[float, float]:
    """Ask a trial and time ``report`` and ``should_prune`` at every step of ``values``;
    with ``fast`` through a ``FastReporter`` (its set-up counted as pruning time).

    Returns:
        The ms per epoch in ``report`` and in ``should_prune``.

    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        trial = study.ask(DISTS)
    reporting = pruning = 0.0
    t0 = time.perf_counter()
    reporter: Any = FastReporter(study, trial) if fast else trial
    pruning += time.perf_counter() - t0
    for step, value in values.items():
        t0 = time.perf_counter()
        reporter.report(value, step)
        t1 = time.perf_counter()
        reporter.should_prune()
        reporting, pruning = reporting + t1 - t0, pruning + time.perf_counter() - t1
    study.tell(trial, min(values.values()))
    return reporting / len(values) * 1e3, pruning / len(values) * 1e3


def bench_storage(args: argparse.Namespace, tmp: Path) -> list[sh.Result]:
    """Part ``storage``: ms per reported epoch, hpo-trainer's set-up vs Optuna's default."""
    n_trials, epochs, timed = 1000, 20, size(args, "storage_timed")
    with sh.clock() as built:
        url = f"sqlite:///{tmp / 'base.db'}"
        storage = optuna.storages.RDBStorage(url)
        study = optuna.create_study(study_name="bench", storage=storage)
        study.set_user_attr("hpo:epochs", epochs)
        sh.fill_study(study, url, sh.finished_trials(DISTS, 50, epochs, tmp), n_trials)
        sh.dispose(storage)
    for copy in "ab":
        shutil.copy(tmp / "base.db", tmp / f"{copy}.db")
    studies = {
        "A": optuna.load_study(
            study_name="bench",
            storage=open_storage(f"sqlite:///{tmp / 'a.db'}"),
            pruner=make_pruner("median", epochs=epochs),
        ),
        "B": optuna.load_study(
            study_name="bench",
            storage=f"sqlite:///{tmp / 'b.db'}",
            pruner=optuna.pruners.MedianPruner(),
        ),
    }
    rng = random.Random(1)
    for key, s in studies.items():  # untimed: fills Optuna's trial cache and SQL caches
        time_trial(s, sh.curve(rng, epochs), fast=key == "A")
    times: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
    for i in range(max(1, timed // epochs)):
        values = sh.curve(rng, epochs)
        for key in "AB" if i % 2 == 0 else "BA":
            times[key].append(time_trial(studies[key], values, fast=key == "A"))
    total = {k: [r + p for r, p in ts] for k, ts in times.items()}
    a, b = sh.median(total["A"]), sh.median(total["B"])
    labels = {
        "A": "(A) hpo-trainer: open_storage + make_pruner + FastReporter",
        "B": "(B) Optuna default: URL string + MedianPruner()",
    }
    rows = [
        [labels[k], f"{sh.median(total[k]):.2f}", f"{sh.median(r for r, _ in times[k]):.2f}"]
        + [
            f"{sh.median(p for _, p in times[k]):.2f}",
            f"{min(total[k]):.2f}",
            f"{max(total[k]):.2f}",
        ]
        for k in "AB"
    ]
    sh.print_table(
        f"storage: ms per reported epoch (report + should_prune), SQLite, {n_trials} finished "
        f"trials x {epochs} epochs in the study (built in {built.wall:.1f} s), "
        f"{len(times['A'])} timed trials per variant, interleaved; a sample is one trial's mean",
        ["variant", "median ms", "report ms", "should_prune ms", "min ms", "max ms"],
        rows,
    )
    return [
        sh.Result(
            "storage_ms_per_epoch_hpo",
            a,
            ".2f",
            f"<= {STORAGE_TARGET_MS} ms",
            a <= STORAGE_TARGET_MS,
        ),
        sh.Result("storage_ms_per_epoch_optuna_default", b, ".2f"),
        sh.Result("storage_ratio_hpo_over_default", sh.ratio(a, b), ".2f"),
    ]


# -- workers --------------------------------------------------------------------------------


def bench_workers(args: argparse.Namespace, tmp: Path) -> list[sh.Result]:
    """Part ``workers``: trials per minute with 2 workers vs 1, compute-bound, no pruning."""
    n_trials, epochs, rounds = size(args, "workers")
    pay_one_off_costs()  # this process's; a spawned worker pays its own
    runs: dict[int, list[sh.SearchRun]] = {1: [], 2: []}
    for rnd in range(rounds):
        for n in (1, 2) if rnd % 2 == 0 else (2, 1):
            folder = tmp / f"w{n}-r{rnd}"
            trainer = load_trainer_from_file(STUDY, size="wide", runs_dir=str(folder), quiet=True)
            with sh.torch_threads(1) if n == 1 else contextlib.nullcontext():
                run, _ = sh.timed_search(
                    trainer, tmp / "workers.log", epochs=epochs, n_trials=n_trials,
                    n_workers=n, storage=f"sqlite:///{folder / 'study.db'}", seed=0,
                    pruner="none",
                )  # fmt: skip
            runs[n].append(run)
    rows = [
        [f"{n} worker(s), round {i + 1}", r.trials, f"{r.wall:.2f}", f"{r.span:.2f}"]
        + [f"{r.head:.2f}", f"{r.tail:.2f}", f"{r.median_trial:.2f}"]
        + [f"{60 * r.trials / r.wall:.1f}", f"{60 * r.trials / r.span:.1f}"]
        + [f"{60 * n / r.median_trial:.1f}"]
        for n, rs in runs.items()
        for i, r in enumerate(rs)
    ]
    sh.print_table(
        f"workers: {n_trials} trials x {epochs} epochs, pruner none, an MLP 64-384-384-10 on "
        f"3,072 synthetic examples, {rounds} interleaved round(s); span: first trial start to "
        "last trial end; head: call start to first trial start; tail: last trial end to call "
        "end; s/trial: median trial, each process's first left out",
        ["search", "trials", "wall s", "span s", "head s", "tail s", "s/trial"]
        + ["trials/min", "trials/min (span)", "trials/min (steady)"],
        rows,
    )
    for r in (*runs[1], *runs[2]):
        if r.trials != n_trials or r.epochs != n_trials * epochs:
            print(f"  warning: a search finished {r.trials} trials / {r.epochs} epochs")

    def fastest(get: Any) -> dict[int, float]:
        return {n: min(get(r) for r in rs) for n, rs in runs.items()}

    wall, span = fastest(lambda r: r.wall), fastest(lambda r: r.span)
    trial = fastest(lambda r: r.median_trial)
    figures = {
        "workers_speedup": (sh.ratio(wall[1], wall[2]), "wall time incl. process start-up"),
        "workers_speedup_span": (sh.ratio(span[1], span[2]), "first trial start to last end"),
        "workers_speedup_steady": (sh.ratio(2 * trial[1], trial[2]), "from median trial times"),
    }
    return [
        sh.Result(name, v, ".2f", f">= {WORKERS_TARGET}, {what}", v >= WORKERS_TARGET)
        for name, (v, what) in figures.items()
    ]


# -- cli ------------------------------------------------------------------------------------


def hpo_trainer_cmd() -> list[str]:
    """The installed ``hpo-trainer`` command."""
    exe = Path(sys.executable).with_name("hpo-trainer")
    found = str(exe) if exe.exists() else shutil.which("hpo-trainer")
    return [found] if found else [sys.executable, "-m", "hpo_trainer.cli"]


def bench_cli(args: argparse.Namespace, tmp: Path) -> list[sh.Result]:
    """Part ``cli``: the whole ``hpo-trainer search`` command vs a plain-Optuna script."""
    n_trials, rounds = size(args, "cli")
    log = tmp / "cli.log"
    runs: dict[str, list[sh.SearchRun]] = {"hpo": [], "plain": []}
    for rnd in range(rounds):
        for kind in ("hpo", "plain") if rnd % 2 == 0 else ("plain", "hpo"):
            folder = tmp / f"{kind}-r{rnd}"
            folder.mkdir()
            if kind == "hpo":
                url, name = f"sqlite:///{folder / 'studies.db'}", "digits_mlp"
                cmd = [*hpo_trainer_cmd(), "search", str(DIGITS), "--trials", str(n_trials)]
                cmd += ["--epochs", "20", "--workers", "2", "--seed", "0"]
                cmd += ["--runs-dir", str(folder)]
            else:
                url, name = f"sqlite:///{folder / 'plain.db'}", "plain"
                cmd = [sys.executable, str(HERE / "plain_optuna_digits.py"), "main", url, name]
                cmd += [str(n_trials), "2", "20", str(DIGITS)]
            with open(log, "ab") as out, sh.clock() as c:
                code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
            if code.returncode != 0:
                raise RuntimeError(
                    f"{kind} exited with {code.returncode}:\n{log.read_text()[-3000:]}"
                )
            runs[kind].append(sh.summarise(sh.read_trials(url, name), c, 2))
    rows = [
        [f"{label}, round {i + 1}", r.trials, r.epochs, f"{r.wall:.2f}", f"{r.head:.2f}"]
        + [f"{r.tail:.2f}", f"{r.ms_per_epoch:.1f}", f"{r.best:.4f}"]
        for kind, label in (("hpo", "hpo-trainer search"), ("plain", "plain Optuna script"))
        for i, r in enumerate(runs[kind])
    ]
    sh.print_table(
        f"cli: {n_trials} trials x 20 epochs of studies/digits_mlp.py, 2 worker processes, "
        f"median pruning, {rounds} interleaved round(s); wall: the whole command; head: "
        "process start to first trial start; tail: last trial end to exit; ms/epoch: inside "
        "trials per epoch trained, each process's first trial left out",
        ["command", "trials", "epochs", "wall s", "head s", "tail s", "ms/epoch", "best val loss"],
        rows,
    )
    hpo, base = (min(r.wall for r in runs[k]) for k in ("hpo", "plain"))
    note = "" if n_trials == 40 else f", quick: {n_trials} trials, not 40"
    return [
        sh.Result(
            "cli_search_seconds", hpo, ".2f", f"<= {CLI_TARGET_S} s{note}", hpo <= CLI_TARGET_S
        ),
        sh.Result("cli_plain_optuna_seconds", base, ".2f"),
        sh.Result("cli_ratio_hpo_over_plain", sh.ratio(hpo, base), ".2f"),
    ]


# -- pruning --------------------------------------------------------------------------------


def bench_pruning(args: argparse.Namespace, tmp: Path) -> list[sh.Result]:
    """Part ``pruning``: median-pruned vs unpruned search of the digits study."""
    n_trials, seeds = size(args, "pruning")
    rows, diffs, fractions = [], [], []
    for seed in seeds:
        got: dict[str, sh.SearchRun] = {}
        for pruner in ("median", "none") if seed % 2 == 0 else ("none", "median"):
            folder = tmp / f"{pruner}-s{seed}"
            trainer = load_trainer_from_file(DIGITS, runs_dir=str(folder), quiet=True)
            options = {} if pruner == "median" else {"pruner": "none"}  # sh.median: the default
            with sh.torch_threads(1):
                got[pruner], _ = sh.timed_search(
                    trainer, tmp / "pruning.log", epochs=20, n_trials=n_trials, seed=seed,
                    storage=f"sqlite:///{folder / 'study.db'}", **options,
                )  # fmt: skip
        pruned, full = got["median"], got["none"]
        diffs.append(pruned.best / full.best - 1)
        fractions.append(sh.ratio(pruned.epochs, full.epochs))
        same = sum(a == b for a, b in zip(pruned.params, full.params))
        rows.append(
            [seed, f"{same}/{n_trials}", f"{pruned.best:.4f}", f"{full.best:.4f}"]
            + [
                f"{100 * diffs[-1]:+.2f}%",
                pruned.epochs,
                full.epochs,
                f"{100 * fractions[-1]:.1f}%",
            ]
            + [f"{pruned.wall:.1f}", f"{full.wall:.1f}"]
        )
    diff, frac = sum(diffs) / len(diffs), sum(fractions) / len(fractions)
    rows.append(["mean", "", "", "", f"{100 * diff:+.2f}%", "", "", f"{100 * frac:.1f}%", "", ""])
    sh.print_table(
        f"pruning: digits study, {n_trials} trials x 20 epochs, 1 worker (1 torch thread), "
        "default median pruner vs pruner='none', same seed; same params: trials whose "
        "sampled parameters are equal in both searches",
        ["seed", "same params", "best pruned", "best unpruned", "rel. diff", "epochs pruned"]
        + ["epochs unpruned", "epoch share", "wall pruned s", "wall unpruned s"],
        rows,
    )
    return [
        sh.Result(
            "pruning_best_loss_rel_diff",
            100 * diff,
            "+.2f",
            f"<= +{100 * PRUNE_LOSS_TARGET:.0f}%, mean of {len(diffs)} seed(s), in %",
            diff <= PRUNE_LOSS_TARGET,
        ),
        sh.Result(
            "pruning_epoch_fraction",
            100 * frac,
            ".1f",
            f"<= {100 * PRUNE_EPOCHS_TARGET:.0f}%, mean of {len(fractions)} seed(s), in %",
            frac <= PRUNE_EPOCHS_TARGET,
        ),
    ]


if __name__ == "__main__":
    parts = {"storage": bench_storage, "workers": bench_workers, "cli": bench_cli}
    sys.exit(sh.main(__doc__ or "", {**parts, "pruning": bench_pruning}))
