"""Benchmark the search: storage cost per epoch, worker scaling, the CLI, and pruning.

Four parts, each interleaving its variants so that a busy machine slows them alike, each
printing a table and ``RESULT name=value (target ...) PASS/FAIL`` lines (collected at the
end):

``storage``
    Cost of one reported epoch (``trial.report`` + ``trial.should_prune``) with the median
    pruner on a SQLite study that already holds 1,000 finished trials of 20 epochs each:
    (A) hpo-trainer's set-up (``hpo_trainer.storage.open_storage`` and
    ``make_pruner("median")``) against (B) Optuna's default (``optuna.load_study`` on the URL
    string, ``MedianPruner()``), on two copies of one database file. The 1,000 trials are
    written by Optuna's ``add_trials`` for a small template set whose rows are then copied
    in SQL (``add_trials`` costs ~10 ms a trial through the ORM; copying takes a fraction of
    a second), and the result is checked through Optuna before timing.
``workers``
    Trials per minute of ``hyp_opt(n_workers=2)`` against ``n_workers=1`` with
    compute-bound trials (no pruning, an MLP on synthetic data that this file defines: it
    doubles as the study file the workers load). The one-worker search runs in this process
    with ``torch.set_num_threads(1)``, as each of the two workers gets one thread, after a
    warm-up that pays this process's one-off costs (a spawned worker pays its own). The
    ratio is given three ways: on the wall time of the whole call (with process start-up
    and shutdown), on the span from the first trial's start to the last trial's end (from
    the trials' ``datetime_start`` / ``datetime_complete``), and in the steady state (from
    the median trial duration, each process's first trial left out).
``cli``
    ``hpo-trainer search studies/digits_mlp.py --trials 40 --epochs 20 --workers 2`` as a
    subprocess, against a hand-written plain-Optuna script doing the same search (same MLP,
    SGD with momentum 0.9 and the study file's ``StepLR(10, gamma=0.5)``, lr log-uniform
    1e-5..1e-1, hidden size in 16/32/64/128, batches of 64, the study file's digits split,
    val loss reported every epoch, ``MedianPruner()``, a SQLite file, two worker processes
    of one torch thread each running ``study.optimize(n_trials=20)``).
``pruning``
    The default search (median pruner) against an unpruned one (``pruner="none"``) on the
    digits study with the same budget and seed, one worker: the best val loss of each, and
    the epochs the pruned search trained as a fraction of the unpruned one's, for several
    seeds. The searches run in this process with one torch thread. (With the TPE sampler
    the two searches have been seen to sample the very same parameters trial by trial, as
    pruned trials fall on the same side of TPE's split as they would have completed; the
    loss difference then only shows whether the pruner cut the eventual best trial.)

Run:
    .venv/bin/python benchmarks/bench_search.py              # full run, ~2 minutes idle
    .venv/bin/python benchmarks/bench_search.py --quick      # smoke test, ~30 s idle
    .venv/bin/python benchmarks/bench_search.py --only storage --only cli

It always exits 0: the RESULT lines say whether each target is met. Where a part repeats
whole searches (``workers``, ``cli``), a RESULT uses the fastest round of each variant, as
other processes only ever slow a round down; the medians are printed beside it. Quick mode
uses smaller sizes (its tables say which), so its PASS/FAIL lines are indicative only. The
load average is printed around each part.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "studies" / "digits_mlp.py"
THIS = Path(__file__).resolve()

STORAGE_TARGET_MS = 2.0  # (A) ms per reported epoch, at most
WORKERS_TARGET = 1.85  # 2-worker / 1-worker trials per minute, at least
CLI_TARGET_S = 15.0  # hpo-trainer search wall time, at most
PRUNE_LOSS_TARGET = 0.02  # pruned best / unpruned best - 1, at most
PRUNE_EPOCHS_TARGET = 0.40  # pruned epochs / unpruned epochs, at most
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run."""

    storage_trials: int  # finished trials in the study before timing
    storage_epochs: int  # intermediate values per trial (stored and timed)
    storage_timed: int  # timed report+should_prune cycles per variant
    workers_trials: int
    workers_epochs: int
    workers_rounds: int
    cli_trials: int
    cli_rounds: int
    pruning_trials: int
    pruning_seeds: tuple[int, ...]


FULL = Config(1000, 20, 400, 10, 20, 2, 40, 2, 40, (0, 1, 2, 3, 4))
QUICK = Config(1000, 20, 100, 4, 6, 1, 12, 1, 20, (0,))


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's complete and pruned trials."""
    return study.get_trials(deepcopy=False, states=DONE)


# -- 1. storage ----------------------------------------------------------------------------


def _curve(rng: random.Random, epochs: int) -> dict[int, float]:
    """A plausible validation-loss curve: a noisy decay from ~2.3 to a floor."""
    start, floor = rng.uniform(1.8, 2.4), rng.uniform(0.08, 1.2)
    return {
        s: floor + (start - floor) * math.exp(-s / 4) + rng.gauss(0, 0.01)
        for s in range(1, epochs + 1)
    }


def _template_trials(n: int, epochs: int, seed: int = 0) -> list[optuna.trial.FrozenTrial]:
    """Finished trials shaped like hpo-trainer's: two params, user attrs, ``epochs`` values."""
    rng = random.Random(seed)
    dists = {
        "optimizer.lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
        "model.hidden_size": optuna.distributions.CategoricalDistribution([16, 32, 64, 128]),
    }
    trials = []
    for i in range(n):
        curve = _curve(rng, epochs)
        best = min(curve, key=lambda s: curve[s])
        trials.append(
            optuna.trial.create_trial(
                params={
                    "optimizer.lr": 10 ** rng.uniform(-5, -1),
                    "model.hidden_size": rng.choice([16, 32, 64, 128]),
                },
                distributions=dists,
                value=curve[best],
                intermediate_values=curve,
                user_attrs={"worker": i % 2, "epochs": epochs, "best_epoch": best},
            )
        )
    return trials


def _clone_trials(path: Path, copies: int) -> None:
    """Repeat every trial of the (only) study in ``path`` ``copies`` times, in plain SQL.

    Every table with a ``trial_id`` column is copied along; primary keys other than the
    trial's are left to SQLite, and trial numbers continue after the existing ones.
    """
    with contextlib.closing(sqlite3.connect(path)) as con, con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        info = {t: list(con.execute(f'PRAGMA table_info("{t}")')) for t in tables}
        trial_cols = [r[1] for r in info["trials"]]
        rows = con.execute(f"SELECT {', '.join(trial_cols)} FROM trials ORDER BY trial_id")
        template = [dict(zip(trial_cols, r)) for r in rows.fetchall()]
        children: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
        for table, cols in info.items():
            names = [r[1] for r in cols]
            if table == "trials" or "trial_id" not in names:
                continue
            keep = [r[1] for r in cols if not r[5]]  # r[5]: position in the primary key
            if "trial_id" not in keep:
                continue
            select = f"SELECT {', '.join(keep)} FROM {table}"
            children[table] = (keep, con.execute(select).fetchall())
        next_id = max(t["trial_id"] for t in template) + 1
        n0 = len(template)
        for k in range(1, copies):
            new_id: dict[int, int] = {}
            new_rows = []
            for t in template:
                new_id[t["trial_id"]] = next_id
                new_rows.append({**t, "trial_id": next_id, "number": t["number"] + k * n0})
                next_id += 1
            con.executemany(
                f"INSERT INTO trials ({', '.join(trial_cols)}) "
                f"VALUES ({', '.join('?' * len(trial_cols))})",
                [tuple(r[c] for c in trial_cols) for r in new_rows],
            )
            for table, (keep, child_rows) in children.items():
                at = keep.index("trial_id")
                marks = ", ".join("?" * len(keep))
                con.executemany(
                    f"INSERT INTO {table} ({', '.join(keep)}) VALUES ({marks})",
                    [r[:at] + (new_id[r[at]],) + r[at + 1 :] for r in child_rows],
                )


def build_study_db(path: Path, n_trials: int, epochs: int) -> str:
    """Create ``path`` holding study ``bench`` with ``n_trials`` finished trials; return URL."""
    url = f"sqlite:///{path}"
    storage = optuna.storages.RDBStorage(url)
    n_template = 50 if n_trials % 50 == 0 else n_trials
    study = optuna.create_study(study_name="bench", storage=storage)
    study.set_user_attr("hpo:epochs", epochs)
    study.add_trials(_template_trials(n_template, epochs))
    storage.engine.dispose()
    _clone_trials(path, n_trials // n_template)
    check = optuna.storages.RDBStorage(url)
    trials = optuna.load_study(study_name="bench", storage=check).get_trials(deepcopy=False)
    check.engine.dispose()
    numbers = {t.number for t in trials}
    ok = (
        len(trials) == n_trials
        and len(numbers) == n_trials
        and all(t.state == TrialState.COMPLETE for t in trials)
        and all(len(t.intermediate_values) == epochs and t.params for t in trials)
    )
    if not ok:
        raise RuntimeError(f"the pre-populated study in {path} is not as intended")
    return url


def _time_trial(
    study: optuna.Study, curve: dict[int, float], *, fast: bool = False
) -> tuple[float, float]:
    """Ask a trial and time ``report`` and ``should_prune`` at every step of ``curve``.

    With ``fast``, the calls go through hpo-trainer's ``FastReporter`` (what a search
    trial uses); setting it up is counted in the pruning time.

    Returns:
        The ms per epoch spent in ``report`` and in ``should_prune``.

    """
    from hpo_trainer.search.pruning import FastReporter

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        trial = study.ask()
    trial.suggest_float("optimizer.lr", 1e-5, 1e-1, log=True)
    trial.suggest_categorical("model.hidden_size", [16, 32, 64, 128])
    reporting = pruning = 0.0
    t0 = time.perf_counter()
    reporter: Any = FastReporter(study, trial) if fast else trial
    pruning += time.perf_counter() - t0
    for step, value in curve.items():
        t0 = time.perf_counter()
        reporter.report(value, step)
        t1 = time.perf_counter()
        reporter.should_prune()
        t2 = time.perf_counter()
        reporting += t1 - t0
        pruning += t2 - t1
    study.tell(trial, min(curve.values()))
    return reporting / len(curve) * 1e3, pruning / len(curve) * 1e3


def bench_storage(cfg: Config, tmp: Path) -> list[Result]:
    """Part 1: ms per reported epoch, hpo-trainer's storage set-up vs Optuna's default."""
    from hpo_trainer.search.storage import open_storage
    from hpo_trainer.search.strategies import make_pruner

    tmp.mkdir(parents=True)
    started = time.perf_counter()
    base = tmp / "base.db"
    build_study_db(base, cfg.storage_trials, cfg.storage_epochs)
    built = time.perf_counter() - started
    shutil.copy(base, tmp / "a.db")
    shutil.copy(base, tmp / "b.db")
    url_a, url_b = f"sqlite:///{tmp / 'a.db'}", f"sqlite:///{tmp / 'b.db'}"
    pruner = make_pruner("median", epochs=cfg.storage_epochs)
    study_a = optuna.load_study(study_name="bench", storage=open_storage(url_a), pruner=pruner)
    study_b = optuna.load_study(
        study_name="bench", storage=url_b, pruner=optuna.pruners.MedianPruner()
    )
    studies = {"A": study_a, "B": study_b}
    times: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
    rng = random.Random(1)
    for key, study in studies.items():  # untimed: fills Optuna's trial cache and SQL caches
        _time_trial(study, _curve(rng, cfg.storage_epochs), fast=key == "A")
    n_trials = max(1, cfg.storage_timed // cfg.storage_epochs)
    for i in range(n_trials):
        curve = _curve(rng, cfg.storage_epochs)
        for key in "AB" if i % 2 == 0 else "BA":
            times[key].append(_time_trial(studies[key], curve, fast=key == "A"))
    n_after = len(study_a.get_trials(deepcopy=False))
    per_epoch = {k: [r + p for r, p in ts] for k, ts in times.items()}
    a, b = (statistics.median(per_epoch[k]) for k in "AB")
    labels = {
        "A": "(A) hpo-trainer: open_storage + make_pruner + FastReporter",
        "B": "(B) Optuna default: URL string + MedianPruner()",
    }
    rows = [
        [
            labels[k],
            f"{statistics.median(per_epoch[k]):.2f}",
            f"{statistics.median(r for r, _ in times[k]):.2f}",
            f"{statistics.median(p for _, p in times[k]):.2f}",
            f"{statistics.mean(per_epoch[k]):.2f}",
            f"{min(per_epoch[k]):.2f}",
            f"{max(per_epoch[k]):.2f}",
        ]
        for k in "AB"
    ]
    print_table(
        f"storage: ms per reported epoch (report + should_prune), SQLite, "
        f"{cfg.storage_trials} finished trials x {cfg.storage_epochs} epochs in the study, "
        f"{n_trials} timed trials x {cfg.storage_epochs} epochs per variant, interleaved; "
        f"each sample is one trial's mean (study built in {built:.1f} s; {n_after} trials "
        "after the run)",
        ["variant", "median ms", "report ms", "should_prune ms", "mean ms", "min ms", "max ms"],
        rows,
    )
    print(f"  ratio A/B (medians): {ratio(a, b):.2f}  (< 1: hpo-trainer's set-up is cheaper)")
    return [
        Result(
            "storage_ms_per_epoch_hpo",
            a,
            ".2f",
            f"<= {STORAGE_TARGET_MS} ms",
            a <= STORAGE_TARGET_MS,
        ),
        Result("storage_ms_per_epoch_optuna_default", b, ".2f", "none, for reference", True),
        Result("storage_ratio_hpo_over_default", ratio(a, b), ".2f", "none, for reference", True),
    ]


# -- 2. workers: a compute-bound study (this file is also the study file workers load) -----


class WideMLP(nn.Module):
    """``in_dim -> width -> width -> classes`` with ReLU: enough work per batch."""

    def __init__(self, in_dim: int = 64, width: int = 256, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits."""
        return self.net(x)


def make_trainer(*, n_train: int = 3072, width: int = 384, **options: Any) -> Trainer:
    """The ``workers`` study: a fixed-size MLP on synthetic data, only ``lr`` searched.

    Every trial costs the same whatever its lr, so trials per minute measure the workers.
    """
    gen = torch.Generator().manual_seed(0)
    n_val = n_train // 4
    x = torch.randn(n_train + n_val, 64, generator=gen)
    teacher = torch.randn(64, 10, generator=gen)
    y = (x @ teacher + 0.5 * torch.randn(len(x), 10, generator=gen)).argmax(dim=1)
    kwargs: dict[str, Any] = {"batch_size": 64, "seed": 0, "name": "bench_workers", **options}
    tr = Trainer((x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), **kwargs)
    hyp = Hyperparameters()
    hyp.register(["lr", "momentum"])
    hyp.set_range("lr", -3, -1.5)
    hyp.set_value("momentum", 0.9)
    tr.set_hyperparameters(hyp)
    tr.set_model(WideMLP)
    tr.prime_model(in_dim=64, width=width, classes=10)
    tr.set_criterion(nn.CrossEntropyLoss)
    tr.set_optimizer(SGD)
    return tr


@dataclass
class SearchRun:
    """What one timed search did.

    The first trial of each process is left out of ``steady`` and ``steady_epochs``: it
    also pays one-off costs (PyTorch imports ``torch._dynamo`` when it builds the first
    optimizer of a process, ~1 s here).
    """

    wall: float  # the whole call
    span: float  # first trial start to last trial end
    head: float  # call start to first trial start (process start-up, study set-up)
    tail: float  # last trial end to call end (waiting workers, shutdown, summary)
    trials: int
    epochs: int
    steady: list[float]  # durations of the trials after each process's first, in seconds
    steady_epochs: int  # epochs of those trials
    best: float
    params: list[dict[str, Any]]  # by trial number

    @property
    def ms_per_epoch(self) -> float:
        """Milliseconds inside (steady) trials per epoch they trained."""
        return ratio(1e3 * sum(self.steady), self.steady_epochs)

    @property
    def median_trial(self) -> float:
        """The median duration of a steady trial, in seconds."""
        return statistics.median(self.steady) if self.steady else math.nan


@dataclass
class Clock:
    """Times a block: ``wall`` seconds, and the local times it began and ended."""

    began: datetime.datetime | None = None
    ended: datetime.datetime | None = None
    wall: float = math.nan

    @contextlib.contextmanager
    def timing(self) -> Iterator[Clock]:
        """Time the block (Optuna stamps trials with the naive local ``datetime.now()``)."""
        self.began = datetime.datetime.now()
        started = time.perf_counter()
        try:
            yield self
        finally:
            self.wall = time.perf_counter() - started
            self.ended = datetime.datetime.now()


def _times(t: optuna.trial.FrozenTrial) -> tuple[datetime.datetime, datetime.datetime] | None:
    """A finished trial's start and end, if both are stamped."""
    if t.datetime_start is None or t.datetime_complete is None:
        return None
    return t.datetime_start, t.datetime_complete


def _summarise(study: optuna.Study, clock: Clock, procs: int) -> SearchRun:
    """Summarise a finished search that ran its trials in ``procs`` processes."""
    stamped = [(times, t) for t in finished(study) if (times := _times(t)) is not None]
    stamped.sort(key=lambda x: x[0][0])
    head = tail = span = math.nan
    if stamped and clock.began and clock.ended:
        first = stamped[0][0][0]
        last = max(end for (_, end), _ in stamped)
        span = (last - first).total_seconds()
        head = (first - clock.began).total_seconds()
        tail = (clock.ended - last).total_seconds()
    steady = stamped[procs:]
    trials = [t for _, t in stamped]
    complete = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return SearchRun(
        wall=clock.wall,
        span=span,
        head=head,
        tail=tail,
        trials=len(trials),
        epochs=sum(len(t.intermediate_values) for t in trials),
        steady=[(end - start).total_seconds() for (start, end), _ in steady],
        steady_epochs=sum(len(t.intermediate_values) for _, t in steady),
        best=min(complete) if complete else math.nan,
        params=[t.params for t in sorted(trials, key=lambda t: t.number)],
    )


def _hyp_opt(
    study_file: Path, folder: Path, log: Path, *, n_workers: int, **search: Any
) -> SearchRun:
    """Run ``load_trainer_from_file(study_file).hyp_opt(...)`` timed; worker logs to ``log``."""
    from hpo_trainer.studyfile import load_trainer_from_file

    folder.mkdir(parents=True)
    tr = load_trainer_from_file(study_file, runs_dir=str(folder), quiet=True)
    storage = f"sqlite:///{folder / 'study.db'}"
    with stderr_to(log), Clock().timing() as clock:
        study = tr.hyp_opt(n_workers=n_workers, storage=storage, **search)
    return _summarise(study, clock, n_workers)


def _warm_up() -> None:
    """Pay this process's one-off costs before timing (the first optimizer imports dynamo)."""
    SGD(nn.Linear(2, 2).parameters(), lr=0.1)


def bench_workers(cfg: Config, tmp: Path) -> list[Result]:
    """Part 2: trials per minute with 2 workers vs 1, compute-bound trials, no pruning."""
    tmp.mkdir(parents=True)
    _warm_up()
    log = tmp / "workers.log"
    runs: dict[int, list[SearchRun]] = {1: [], 2: []}
    search = {
        "epochs": cfg.workers_epochs,
        "iters": cfg.workers_trials,
        "seed": 0,
        "pruner": "none",
    }
    for rnd in range(cfg.workers_rounds):
        for n in (1, 2) if rnd % 2 == 0 else (2, 1):
            folder = tmp / f"w{n}-r{rnd}"
            with torch_threads(1) if n == 1 else contextlib.nullcontext():
                runs[n].append(_hyp_opt(THIS, folder, log, n_workers=n, **search))
    rows = []
    for n, rs in runs.items():
        for i, r in enumerate(rs):
            rows.append(
                [
                    f"{n} worker{'s' if n > 1 else ''}, round {i + 1}",
                    r.trials,
                    f"{r.wall:.2f}",
                    f"{r.span:.2f}",
                    f"{r.head:.2f}",
                    f"{r.tail:.2f}",
                    f"{r.median_trial:.2f}",
                    f"{60 * r.trials / r.wall:.1f}",
                    f"{60 * r.trials / r.span:.1f}",
                    f"{60 * n / r.median_trial:.1f}",
                ]
            )
    for r in (*runs[1], *runs[2]):
        if r.trials != cfg.workers_trials or r.epochs != cfg.workers_trials * cfg.workers_epochs:
            print(f"  warning: a search finished {r.trials} trials / {r.epochs} epochs; see {log}")
    # Other processes only ever slow a round down: the fastest round is the least disturbed.
    wall = {n: min(r.wall for r in rs) for n, rs in runs.items()}
    span = {n: min(r.span for r in rs) for n, rs in runs.items()}
    trial = {n: min(r.median_trial for r in rs) for n, rs in runs.items()}
    med_wall = {n: statistics.median(r.wall for r in rs) for n, rs in runs.items()}
    print_table(
        f"workers: {cfg.workers_trials} trials x {cfg.workers_epochs} epochs, pruner none, "
        f"an MLP 64-384-384-10 on 3,072 synthetic examples, {cfg.workers_rounds} interleaved "
        "round(s); 1 worker runs in-process (warmed up) with torch.set_num_threads(1), each "
        "of 2 workers gets 1 thread. span: first trial start to last trial end; head: call "
        "start to first trial start; tail: last trial end to call end; s/trial: median "
        "trial, each process's first left out; steady: workers / s per trial",
        [
            "search",
            "trials",
            "wall s",
            "span s",
            "head s",
            "tail s",
            "s/trial",
            "trials/min",
            "trials/min (span)",
            "trials/min (steady)",
        ],
        rows,
    )
    by_wall, by_span = ratio(wall[1], wall[2]), ratio(span[1], span[2])
    by_trial = ratio(2 * trial[1], trial[2])
    print(
        f"  2-worker / 1-worker trials per minute (fastest round of each): {by_wall:.2f} on "
        f"wall time, {by_span:.2f} on the span of the trials, {by_trial:.2f} in the steady "
        f"state (2 x {trial[1]:.2f} s / {trial[2]:.2f} s per trial); on median wall times: "
        f"{ratio(med_wall[1], med_wall[2]):.2f}"
    )
    return [
        Result(
            "workers_speedup",
            by_wall,
            ".2f",
            f">= {WORKERS_TARGET}, wall time incl. process start-up",
            by_wall >= WORKERS_TARGET,
        ),
        Result(
            "workers_speedup_span",
            by_span,
            ".2f",
            f">= {WORKERS_TARGET}, first trial start to last trial end",
            by_span >= WORKERS_TARGET,
        ),
        Result(
            "workers_speedup_steady",
            by_trial,
            ".2f",
            f">= {WORKERS_TARGET}, from median trial durations",
            by_trial >= WORKERS_TARGET,
        ),
    ]


# -- 3. cli --------------------------------------------------------------------------------

PLAIN_SCRIPT = '''\
"""The digits search written with plain Optuna (generated by benchmarks/bench_search.py).

Usage: plain.py main URL STUDY N_TRIALS N_PROCS EPOCHS DIGITS_FILE
"""

import importlib.util
import subprocess
import sys

import optuna
import torch
from torch import nn

MODE, URL, STUDY = sys.argv[1:4]
N_TRIALS, N_PROCS, EPOCHS = (int(a) for a in sys.argv[4:7])
DIGITS = sys.argv[7]


def load_split():
    spec = importlib.util.spec_from_file_location("digits_mlp", DIGITS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_digits_split()


def objective(trial, splits):
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    hidden = trial.suggest_categorical("hidden_size", [16, 32, 64, 128])
    torch.manual_seed(trial.number)
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10, gamma=0.5)
    loss_fn = nn.CrossEntropyLoss()
    (x, y), (xv, yv) = splits["train"], splits["val"]
    best = float("inf")
    for epoch in range(1, EPOCHS + 1):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            val = loss_fn(model(xv), yv).item()
        best = min(best, val)
        trial.report(val, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return best


def worker(index):
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    splits = load_split()
    study = optuna.load_study(
        study_name=STUDY,
        storage=URL,
        sampler=optuna.samplers.TPESampler(seed=index),
        pruner=optuna.pruners.MedianPruner(),
    )
    n = N_TRIALS // N_PROCS + (index < N_TRIALS % N_PROCS)
    study.optimize(lambda t: objective(t, splits), n_trials=n)


if MODE == "main":
    optuna.create_study(study_name=STUDY, storage=URL, pruner=optuna.pruners.MedianPruner())
    procs = [
        subprocess.Popen([sys.executable, __file__, "worker", *sys.argv[2:], str(i)])
        for i in range(N_PROCS)
    ]
    sys.exit(max(p.wait() for p in procs))
else:
    worker(int(sys.argv[8]))
'''


def _hpo_trainer_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("hpo-trainer")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("hpo-trainer")
    return [found] if found else [sys.executable, "-m", "hpo_trainer.cli"]


def _timed(cmd: list[str], log: Path) -> tuple[Clock, int]:
    """Run ``cmd`` with its output to ``log``; return its clock and exit code."""
    with open(log, "ab") as out, Clock().timing() as clock:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO).returncode
    return clock, code


def _study_summary(url: str, name: str, clock: Clock) -> SearchRun:
    storage = optuna.storages.RDBStorage(url)
    try:
        return _summarise(optuna.load_study(study_name=name, storage=storage), clock, 2)
    finally:
        storage.engine.dispose()


def bench_cli(cfg: Config, tmp: Path) -> list[Result]:
    """Part 3: the whole ``hpo-trainer search`` command vs a plain-Optuna script."""
    tmp.mkdir(parents=True)
    plain = tmp / "plain_optuna_digits.py"
    plain.write_text(PLAIN_SCRIPT)
    log = tmp / "cli.log"
    runs: dict[str, list[SearchRun]] = {"hpo": [], "plain": []}
    for rnd in range(cfg.cli_rounds):
        for kind in ("hpo", "plain") if rnd % 2 == 0 else ("plain", "hpo"):
            folder = tmp / f"{kind}-r{rnd}"
            folder.mkdir()
            if kind == "hpo":
                cmd = [
                    *_hpo_trainer_cmd(),
                    "search",
                    str(DIGITS),
                    "--trials",
                    str(cfg.cli_trials),
                    "--epochs",
                    "20",
                    "--workers",
                    "2",
                    "--seed",
                    "0",
                    "--runs-dir",
                    str(folder),
                ]
                url, name = f"sqlite:///{folder / 'studies.db'}", "digits_mlp"
            else:
                url, name = f"sqlite:///{folder / 'plain.db'}", "plain"
                cmd = [
                    sys.executable,
                    str(plain),
                    "main",
                    url,
                    name,
                    str(cfg.cli_trials),
                    "2",
                    "20",
                    str(DIGITS),
                ]
            clock, code = _timed(cmd, log)
            if code != 0:
                raise RuntimeError(
                    f"{kind} search exited with {code}; see {log}:\n" + log.read_text()[-3000:]
                )
            runs[kind].append(_study_summary(url, name, clock))
    rows = []
    for kind, label in (("hpo", "hpo-trainer search"), ("plain", "plain Optuna script")):
        for i, r in enumerate(runs[kind]):
            rows.append(
                [
                    f"{label}, round {i + 1}",
                    r.trials,
                    r.epochs,
                    f"{r.wall:.2f}",
                    f"{r.head:.2f}",
                    f"{r.tail:.2f}",
                    f"{r.ms_per_epoch:.1f}",
                    f"{r.best:.4f}",
                ]
            )
    print_table(
        f"cli: {cfg.cli_trials} trials x 20 epochs of studies/digits_mlp.py, 2 worker "
        f"processes, median pruning, wall time including process start, {cfg.cli_rounds} "
        "interleaved round(s); head: process start to first trial start; tail: last trial "
        "end to exit; ms/epoch: time inside trials (datetime_start to datetime_complete) "
        "per epoch trained, each process's first trial left out",
        [
            "command",
            "trials",
            "epochs",
            "wall s",
            "head s",
            "tail s",
            "ms/epoch in trials",
            "best val loss",
        ],
        rows,
    )
    # Other processes only ever slow a round down: the fastest round is the least disturbed.
    hpo = min(r.wall for r in runs["hpo"])
    base = min(r.wall for r in runs["plain"])
    med = {k: statistics.median(r.wall for r in rs) for k, rs in runs.items()}
    print(
        f"  hpo-trainer / plain Optuna wall time: {ratio(hpo, base):.2f} (fastest round of "
        f"each: {hpo:.2f} s / {base:.2f} s), {ratio(med['hpo'], med['plain']):.2f} on medians"
    )
    note = "" if cfg.cli_trials == 40 else f", quick: {cfg.cli_trials} trials, not 40"
    return [
        Result(
            "cli_search_seconds", hpo, ".2f", f"<= {CLI_TARGET_S} s{note}", hpo <= CLI_TARGET_S
        ),
        Result("cli_plain_optuna_seconds", base, ".2f", "none, for reference", True),
        Result("cli_ratio_hpo_over_plain", ratio(hpo, base), ".2f", "none, for reference", True),
    ]


# -- 4. pruning ----------------------------------------------------------------------------


def bench_pruning(cfg: Config, tmp: Path) -> list[Result]:
    """Part 4: median-pruned vs unpruned search of the digits study, same budget and seed."""
    tmp.mkdir(parents=True)
    log = tmp / "pruning.log"
    rows = []
    diffs, fractions = [], []
    for seed in cfg.pruning_seeds:
        got: dict[str, SearchRun] = {}
        for pruner in ("median", "none") if seed % 2 == 0 else ("none", "median"):
            options: dict[str, Any] = {} if pruner == "median" else {"pruner": "none"}
            with torch_threads(1):
                got[pruner] = _hyp_opt(
                    DIGITS,
                    tmp / f"{pruner}-s{seed}",
                    log,
                    n_workers=1,
                    epochs=20,
                    iters=cfg.pruning_trials,
                    seed=seed,
                    **options,
                )
        pruned, full = got["median"], got["none"]
        diff, frac = pruned.best / full.best - 1, ratio(pruned.epochs, full.epochs)
        diffs.append(diff)
        fractions.append(frac)
        same = sum(a == b for a, b in zip(pruned.params, full.params))
        rows.append(
            [
                seed,
                f"{same}/{cfg.pruning_trials}",
                f"{pruned.best:.4f}",
                f"{full.best:.4f}",
                f"{100 * diff:+.2f}%",
                pruned.epochs,
                full.epochs,
                f"{100 * frac:.1f}%",
                f"{pruned.wall:.1f}",
                f"{full.wall:.1f}",
            ]
        )
    diff, frac = statistics.mean(diffs), statistics.mean(fractions)
    rows.append(["mean", "", "", "", f"{100 * diff:+.2f}%", "", "", f"{100 * frac:.1f}%", "", ""])
    print_table(
        f"pruning: digits study, {cfg.pruning_trials} trials x 20 epochs, 1 worker (1 torch "
        "thread), default median pruner vs pruner='none', same seed; same params: trials "
        "whose sampled parameters are equal in both searches",
        [
            "seed",
            "same params",
            "best pruned",
            "best unpruned",
            "rel. diff",
            "epochs pruned",
            "epochs unpruned",
            "epoch fraction",
            "wall pruned s",
            "wall unpruned s",
        ],
        rows,
    )
    return [
        Result(
            "pruning_best_loss_rel_diff",
            100 * diff,
            "+.2f",
            f"<= +{100 * PRUNE_LOSS_TARGET:.0f}%, mean of {len(diffs)} seed(s), in %",
            diff <= PRUNE_LOSS_TARGET,
        ),
        Result(
            "pruning_epoch_fraction",
            100 * frac,
            ".1f",
            f"<= {100 * PRUNE_EPOCHS_TARGET:.0f}%, mean of {len(fractions)} seed(s), in %",
            frac <= PRUNE_EPOCHS_TARGET,
        ),
    ]


# -- main ----------------------------------------------------------------------------------

BENCHES: dict[str, Callable[[Config, Path], list[Result]]] = {
    "storage": bench_storage,
    "workers": bench_workers,
    "cli": bench_cli,
    "pruning": bench_pruning,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts, print their tables and the RESULT lines; always return 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, ~30 s on an idle machine"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(BENCHES),
        metavar="NAME",
        help=f"run only this part (repeatable): {', '.join(BENCHES)}",
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    parts = list(dict.fromkeys(args.only or BENCHES))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    mode = "quick" if args.quick else "full"
    return run_parts(
        f"bench_search ({mode})", parts, lambda name, folder: BENCHES[name](cfg, folder)
    )


if __name__ == "__main__":
    sys.exit(main())
