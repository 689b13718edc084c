"""Benchmark the search, each part's variants interleaved: ``storage``, ms per reported epoch
(``report`` + ``should_prune``) in a SQLite study of 1,000 trials, hpo-trainer's set-up vs
Optuna's default; ``workers``, trials per minute of 2 workers over 1 (compute-bound trials,
fastest round); ``cli``, ``hpo-trainer search`` vs the same search in plain Optuna
(``plain_optuna_digits.py``); ``pruning``, the median pruner vs none, same seeds;
``epoch``, the cost of one epoch inside a trial (training, report and pruning decision,
checkpoint, TensorBoard) against a hand-written Optuna objective, same model and params.

Run: .venv/bin/python benchmarks/bench_search.py [--quick] [--only PART]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from hpo_trainer.search.pruning import FastReporter
from hpo_trainer.search.storage import open_storage
from hpo_trainer.search.strategies import make_pruner

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _shared as sh  # noqa: E402
from synthetic_study import pay_one_off_costs  # noqa: E402

DIGITS = HERE.parent / "studies" / "digits_mlp.py"
STORAGE_TARGET_MS = 2.0  # (A) ms per reported epoch, at most
WORKERS_TARGET = 1.85  # 2-worker / 1-worker trials per minute, at least
CLI_TARGET_S = 15.0  # hpo-trainer search wall time, at most
PRUNE_LOSS_TARGET = 0.02  # pruned best / unpruned best - 1, at most
PRUNE_EPOCHS_TARGET = 0.40  # pruned epochs / unpruned epochs, at most
SIZES = {  # full, quick
    "storage": (20, 5),  # timed trials of 20 epochs per variant
    "workers": ((10, 20, 2), (4, 6, 1)),  # trials, epochs, rounds
    "cli": ((40, 2), (12, 1)),  # trials, rounds
    "pruning": ((40, (0, 1, 2, 3, 4)), (20, (0,))),  # trials, seeds
    "epoch": ((8, 20, 5), (3, 5, 1)),  # trials, epochs, rounds
}
EPOCH_TARGET = 1.05  # hpo-trainer trial epoch / hand-written objective epoch, at most
FIXED = {"lr": 0.03, "hidden_size": 64}
DISTS = {
    "optimizer.lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
    "model.hidden_size": optuna.distributions.CategoricalDistribution([16, 32, 64, 128]),
}


def time_trial(study: optuna.Study, rng: random.Random, fast: bool) -> tuple[float, float]:
    """Return the ms per epoch of ``report`` and ``should_prune`` in a new trial (with ``fast``
    through a ``FastReporter``, its set-up counted as pruning)."""
    values = sh.curve(rng, 20)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        trial = study.ask(DISTS)
    t0 = time.perf_counter()
    reporter: Any = FastReporter(study, trial) if fast else trial
    reporting, pruning = 0.0, time.perf_counter() - t0
    for step, value in values.items():
        t0 = time.perf_counter()
        reporter.report(value, step)
        t1 = time.perf_counter()
        reporter.should_prune()
        reporting, pruning = reporting + t1 - t0, pruning + time.perf_counter() - t1
    study.tell(trial, min(values.values()))
    return reporting / len(values) * 1e3, pruning / len(values) * 1e3


def bench_storage(args: argparse.Namespace, tmp: Path) -> list[str]:
    """Part ``storage``: ms per reported epoch, hpo-trainer's set-up vs Optuna's default."""
    started, url, rounds = time.perf_counter(), f"sqlite:///{tmp / 'base.db'}", SIZES["storage"]
    study = optuna.create_study(study_name="bench", storage=url)
    study.set_user_attr("hpo:epochs", 20)
    sh.fill_study(study, url, sh.finished_trials(DISTS, 50, 20, tmp), 1000)
    built = time.perf_counter() - started
    for copy in "ab":
        shutil.copy(tmp / "base.db", tmp / f"{copy}.db")
    hpo = open_storage(f"sqlite:///{tmp / 'a.db'}")
    a = optuna.load_study(study_name="bench", storage=hpo, pruner=make_pruner("median", epochs=20))
    b = optuna.load_study(study_name="bench", storage=f"sqlite:///{tmp / 'b.db'}")
    rng_a, rng_b = random.Random(1), random.Random(1)  # the same curves for both
    label_a = "(A) hpo-trainer: open_storage + make_pruner + FastReporter"
    label_b = "(B) Optuna default: URL string + MedianPruner()"
    variants = {
        label_a: lambda: time_trial(a, rng_a, True),
        label_b: lambda: time_trial(b, rng_b, False),
    }
    times = sh.interleave(variants, rounds[args.quick], warm_up=True)  # warm: Optuna's caches
    total = {k: [r + p for r, p in ts] for k, ts in times.items()}
    rows = [
        [
            k,
            *(f"{sh.median(v):.2f}" for v in (total[k], *zip(*ts))),
            f"{min(total[k]):.2f}",
            f"{max(total[k]):.2f}",
        ]
        for k, ts in times.items()
    ]
    sh.print_table(
        "storage: ms per reported epoch (report + should_prune), SQLite, 1000 finished trials "
        f"x 20 epochs in the study (built in {built:.1f} s), {rounds[args.quick]} timed trials "
        "per variant, interleaved; a sample is one trial's mean",
        ["variant", "median ms", "report ms", "should_prune ms", "min ms", "max ms"],
        rows,
    )
    ms_a, ms_b = (sh.median(t) for t in total.values())
    ok = ms_a <= STORAGE_TARGET_MS
    return [
        sh.result("storage_ms_per_epoch_hpo", ms_a, ".2f", f"<= {STORAGE_TARGET_MS} ms", ok),
        sh.result("storage_ms_per_epoch_optuna_default", ms_b, ".2f"),
        sh.result("storage_ratio_hpo_over_default", sh.ratio(ms_a, ms_b), ".2f"),
    ]


def bench_workers(args: argparse.Namespace, tmp: Path) -> list[str]:
    """Part ``workers``: trials per minute with 2 workers vs 1, compute-bound, no pruning."""
    n_trials, epochs, rounds = SIZES["workers"][args.quick]
    pay_one_off_costs()  # this process's; a spawned worker pays its own

    def one(n: int) -> sh.SearchRun:
        options = {"epochs": epochs, "n_trials": n_trials, "n_workers": n, "pruner": "none"}
        study, threads = HERE / "synthetic_study.py", 1 if n == 1 else None  # spawned: own
        return sh.timed_search(study, tmp / "log", threads, {"size": "wide"}, seed=0, **options)[0]

    runs = sh.interleave({1: lambda: one(1), 2: lambda: one(2)}, rounds)
    sh.print_table(
        f"workers: {n_trials} trials x {epochs} epochs, pruner none, an MLP 64-384-384-10 on "
        f"3,072 synthetic examples, {rounds} interleaved round(s); {sh.SPANS}; s/trial: median "
        "trial, each process's first left out",
        ["search", "trials", "wall s", "span s", "head s", "tail s", "s/trial", "trials/min"]
        + ["trials/min (span)", "trials/min (steady)"],
        [
            [f"{n} worker(s), round {i + 1}", r.trials]
            + [f"{v:.2f}" for v in (r.wall, r.span, r.head, r.tail, r.median_trial)]
            + [f"{v:.1f}" for v in (60 * r.trials / r.wall, 60 * r.trials / r.span)]
            + [f"{60 * n / r.median_trial:.1f}"]
            for n, rs in runs.items()
            for i, r in enumerate(rs)
        ],
    )
    wall, span, trial = (
        {n: min(getattr(r, field) for r in rs) for n, rs in runs.items()}
        for field in ("wall", "span", "median_trial")
    )
    return [
        sh.result(name, v, ".2f", f">= {WORKERS_TARGET}, {what}", v >= WORKERS_TARGET)
        for name, v, what in (
            ("workers_speedup", sh.ratio(wall[1], wall[2]), "wall time incl. process start-up"),
            ("workers_speedup_span", sh.ratio(span[1], span[2]), "first trial start to last end"),
            ("workers_speedup_steady", 2 * trial[1] / trial[2], "from median trial times"),
        )
    ]


def hand_written_epochs(n_trials: int, epochs: int, tmp: Path) -> sh.SearchRun:
    """Trials of the digits MLP in a hand-written Optuna objective, params fixed to ``FIXED``:
    the same model, optimizer, scheduler, batches and median pruner as the study file."""
    import runpy

    from plain_optuna_digits import objective

    splits = runpy.run_path(str(DIGITS))["load_digits_split"]()

    url = f"sqlite:///{Path(tempfile.mkdtemp(dir=tmp)) / 'hand.db'}"
    sampler = optuna.samplers.PartialFixedSampler(FIXED, optuna.samplers.RandomSampler(0))
    study = optuna.create_study(storage=url, sampler=sampler, pruner=optuna.pruners.MedianPruner())
    began, started = datetime.datetime.now(), time.perf_counter()
    with sh.torch_threads(1):
        study.optimize(lambda t: objective(t, splits, epochs), n_trials=n_trials)
    return sh.summarise(study.trials, began, time.perf_counter() - started, 1)


def bench_epoch(args: argparse.Namespace, tmp: Path) -> list[str]:
    """Part ``epoch``: ms per epoch inside trials, hpo-trainer's trial vs hand-written."""
    n_trials, epochs, rounds = SIZES["epoch"][args.quick]
    fixed = {"optimizer.lr": FIXED["lr"], "model.hidden_size": FIXED["hidden_size"]}

    def product() -> sh.SearchRun:
        sampler = optuna.samplers.PartialFixedSampler(fixed, optuna.samplers.RandomSampler(0))
        run, _ = sh.timed_search(
            DIGITS, tmp / "epoch.log", 1, {}, epochs=epochs, n_trials=n_trials, n_workers=1,
            sampler=sampler, pruner="median", seed=0,
        )  # fmt: skip
        return run

    runs = sh.interleave(
        {
            "hpo-trainer trial": product,
            "hand-written objective": lambda: hand_written_epochs(n_trials, epochs, tmp),
        },  # fmt: skip
        rounds,
        warm_up=True,
    )
    ms = {k: sh.median(r.ms_per_epoch for r in rs) for k, rs in runs.items()}
    sh.print_table(
        f"epoch: ms per epoch inside trials ({n_trials} trials x {epochs} epochs of the digits "
        f"MLP, params fixed, 1 thread, {rounds} interleaved rounds, each search's first trial "
        "left out); hpo-trainer's includes report + pruning decision, the per-epoch "
        "checkpoint and TensorBoard",
        ["variant", "ms/epoch (median of rounds)", "rounds"],
        [
            [k, f"{v:.2f}", " ".join(f"{r.ms_per_epoch:.2f}" for r in runs[k])]
            for k, v in ms.items()
        ],
    )
    r = sh.ratio(ms["hpo-trainer trial"], ms["hand-written objective"])
    return [sh.result("epoch_cost_ratio", r, ".3f", f"<= {EPOCH_TARGET}", r <= EPOCH_TARGET)]


def cli_search(plain: bool, n_trials: int, tmp: Path) -> sh.SearchRun:
    """Run ``hpo-trainer search``, or with ``plain`` the plain-Optuna script, timed."""
    folder, log = Path(tempfile.mkdtemp(dir=tmp)), tmp / "cli.log"
    url, name = f"sqlite:///{folder / 'studies.db'}", "plain" if plain else "digits_mlp"
    cmd = [str(Path(sys.executable).with_name("hpo-trainer")), "search", str(DIGITS)]
    cmd += ["--trials", str(n_trials), "--epochs", "20", "--workers", "2", "--seed", "0"]
    cmd += ["--runs-dir", str(folder)]
    if plain:
        cmd = [sys.executable, str(HERE / "plain_optuna_digits.py"), "main", url, name]
        cmd += [str(n_trials), "2", "20", str(DIGITS)]
    began, started = datetime.datetime.now(), time.perf_counter()
    with open(log, "ab") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=HERE.parent)
    wall = time.perf_counter() - started
    if code.returncode != 0:
        raise RuntimeError(f"{cmd[1]} exited with {code.returncode}:\n{log.read_text()[-3000:]}")
    return sh.summarise(sh.read_trials(url, name), began, wall, 2)


def bench_cli(args: argparse.Namespace, tmp: Path) -> list[str]:
    """Part ``cli``: the whole ``hpo-trainer search`` command vs a plain-Optuna script."""
    n_trials, rounds = SIZES["cli"][args.quick]
    runs = sh.interleave(
        {
            "hpo-trainer search": lambda: cli_search(False, n_trials, tmp),
            "plain Optuna script": lambda: cli_search(True, n_trials, tmp),
        },
        rounds,
    )
    sh.print_table(
        f"cli: {n_trials} trials x 20 epochs of studies/digits_mlp.py, 2 worker processes, "
        f"median pruning, {rounds} interleaved round(s); wall: the whole command; head: "
        "process start to first trial start; tail: last trial end to exit; ms/epoch: inside "
        "trials per epoch trained, each process's first trial left out",
        ["command", "trials", "epochs", "wall s", "head s", "tail s", "ms/epoch", "best val loss"],
        [
            [f"{label}, round {i + 1}", r.trials, r.epochs, f"{r.wall:.2f}", f"{r.head:.2f}"]
            + [f"{r.tail:.2f}", f"{r.ms_per_epoch:.1f}", f"{r.best:.4f}"]
            for label, rs in runs.items()
            for i, r in enumerate(rs)
        ],
    )
    hpo, base = (min(r.wall for r in rs) for rs in runs.values())
    target = f"<= {CLI_TARGET_S} s" + (
        "" if n_trials == 40 else f", quick: {n_trials} trials, not 40"
    )
    return [
        sh.result("cli_search_seconds", hpo, ".2f", target, hpo <= CLI_TARGET_S),
        sh.result("cli_plain_optuna_seconds", base, ".2f"),
        sh.result("cli_ratio_hpo_over_plain", sh.ratio(hpo, base), ".2f"),
    ]


def bench_pruning(args: argparse.Namespace, tmp: Path) -> list[str]:
    """Part ``pruning``: median-pruned vs unpruned search of the digits study."""
    n_trials, seeds = SIZES["pruning"][args.quick]
    seed_of = {"median": iter(seeds), "none": iter(seeds)}  # each variant's next seed

    def one(pruner: str) -> sh.SearchRun:
        options = {"epochs": 20, "n_trials": n_trials, "seed": next(seed_of[pruner])}
        options["pruner"] = pruner  # the median pruner (the default until bench_quality)
        return sh.timed_search(DIGITS, tmp / "log", 1, {}, **options)[0]

    runs = sh.interleave({p: functools.partial(one, p) for p in ("median", "none")}, len(seeds))
    rows, diffs, fractions = [], [], []
    for seed, pruned, full in zip(seeds, runs["median"], runs["none"]):
        diffs.append(pruned.best / full.best - 1)
        fractions.append(sh.ratio(pruned.epochs, full.epochs))
        same = sum(a == b for a, b in zip(pruned.params, full.params))
        share, best = f"{100 * fractions[-1]:.1f}%", f"{100 * diffs[-1]:+.2f}%"
        rows.append(
            [seed, f"{same}/{n_trials}", f"{pruned.best:.4f}", f"{full.best:.4f}", best]
            + [pruned.epochs, full.epochs, share, f"{pruned.wall:.1f}", f"{full.wall:.1f}"]
        )
    diff, frac = sum(diffs) / len(diffs), sum(fractions) / len(fractions)
    rows.append(["mean", "", "", "", f"{100 * diff:+.2f}%", "", "", f"{100 * frac:.1f}%", "", ""])
    sh.print_table(
        f"pruning: digits study, {n_trials} trials x 20 epochs, 1 worker (1 torch thread), "
        "median pruner vs pruner='none', same seed; same params: trials whose "
        "sampled parameters are equal in both searches",
        ["seed", "same params", "best pruned", "best unpruned", "rel. diff", "epochs pruned"]
        + ["epochs unpruned", "epoch share", "wall pruned s", "wall unpruned s"],
        rows,
    )
    of, ok = f"mean of {len(seeds)} seed(s), in %", diff <= PRUNE_LOSS_TARGET
    loss_target = f"<= +{100 * PRUNE_LOSS_TARGET:.0f}%, {of}"
    epochs_target = f"<= {100 * PRUNE_EPOCHS_TARGET:.0f}%, {of}"
    return [
        sh.result("pruning_best_loss_rel_diff", 100 * diff, "+.2f", loss_target, ok),
        sh.result(
            "pruning_epoch_fraction", 100 * frac, ".1f", epochs_target, frac <= PRUNE_EPOCHS_TARGET
        ),
    ]


if __name__ == "__main__":
    parts = {"storage": bench_storage, "workers": bench_workers, "cli": bench_cli}
    parts |= {"pruning": bench_pruning, "epoch": bench_epoch}
    sys.exit(sh.main(__doc__ or "", parts))
