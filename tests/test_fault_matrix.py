"""The fault matrix of issue 17: one trial lifecycle, and every storage keeps its promises.

On SQLite, PostgreSQL, a journal file and Redis alike, one study of
``tests/studies/fault_digits.py`` (whose options switch the faults on) goes through five
faults with 2 worker processes, each step run as a user runs it:

1. ``search()``: both workers are SIGKILLed mid-trial (scenario 2). The search stops short
   and names them; their trials stay RUNNING, as no worker is left to notice.
2. The same ``search()`` again retries the dead trials from their checkpoints and finishes
   the budget (scenario 2). Meanwhile a queued trial whose val/acc is NaN fails with the
   reason and is counted, and the search goes on (scenario 4); and one retry's worker is
   SIGKILLed mid-epoch while the other worker trains (scenario 1): the other worker retries
   it again from its checkpoint and finishes the budget.
3. ``hpo-trainer search`` with a larger budget, SIGTERMed mid-trial (scenario 3): exit 143,
   the running trials re-queued, nothing RUNNING.
4. ``search()`` again, with worker 1 raising in ``make_trainer`` as it starts (scenario 5):
   it says why, and worker 0 alone resumes the stopped trials from their checkpoints and
   finishes the budget (scenario 3): exit 0, the broken worker named, as documented.
5. ``search()`` with one worker, where one more NaN trial reaches ``max_failures``: it stops
   short (scenario 4).

Each step checks the exit code (for ``search()``, the outcome that the command's exit code
is made from: 0 when complete, else 1), that the budget is exact,
what is left RUNNING, and the epochs trained again (a retry resumes from the last checkpoint
of the attempt before it: ``resumed_from_epoch``). The figures (epochs recomputed, time to
recover) are printed with ``-s``; the README's "Reliability" section and
``benchmarks/results/fault_matrix.md`` quote them.

The ``search()`` steps beat every second and call a trial dead after 2 s without a beat. The
command line keeps the defaults (5 s and 20 s) and a trial is judged by the grace period it
started with, so dead trials are recovered in ``search()`` steps, and the command line is
the one a signal stops. Start-up (each process imports torch) is most of the time: 9 processes
per storage.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState
from scenarios import BIN, FINISHED
from test_recovery import redis_db  # noqa: F401  (the scratch Redis database fixture)

from hpo_trainer.facade.studyfile import load_trainer_from_file
from hpo_trainer.search import SearchOutcome, search
from hpo_trainer.search.facts import first_attempt
from hpo_trainer.search.storage import open_storage

pytestmark = pytest.mark.slow  # searches with worker processes, servers, the command line

FAULTS = Path(__file__).resolve().parent / "studies" / "fault_digits.py"
EPOCHS = 3
OBJECTIVES = ["val/loss:min", "val/acc:max"]
#: The study file's hidden sizes: 32 may be killed (kill tokens), 24 has a NaN val/acc.
MORTAL, NAN = 32, 24
#: What steps 1 and 2 queue: two trials that die, then one whose val/acc is NaN.
QUEUED = [
    {"model": {"hidden_size": MORTAL}, "optimizer": {"lr": 0.05}},
    {"model": {"hidden_size": MORTAL}, "optimizer": {"lr": 0.03}},
    {"model": {"hidden_size": NAN}, "optimizer": {"lr": 0.05}},
]
STORAGES = ["sqlite", "postgresql", "journal", "redis"]


def _open_url(url: str) -> Any:
    """Open any storage URL the product takes, for reading (as ``status`` does)."""
    return open_storage(url)


@dataclass
class Store:
    """One storage of the matrix, its study, and the figures measured on it."""

    kind: str
    url: str
    name: str
    runs: Path
    data: Path
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    _storage: Any = None

    def trials(self) -> list[FrozenTrial]:
        """The study's trials, read afresh (through one storage object per test)."""
        if self._storage is None:
            self._storage = _open_url(self.url)
        study = optuna.load_study(study_name=self.name, storage=self._storage)
        return study.get_trials(deepcopy=False)


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory: pytest.TempPathFactory, digits: dict[str, Any]) -> Path:
    """The digits splits saved once, so that no worker imports scikit-learn to load them."""
    path = tmp_path_factory.mktemp("data") / "digits.pt"
    torch.save(digits, path)
    return path


@pytest.fixture(params=STORAGES)
def store(request: pytest.FixtureRequest, tmp_path: Path, digits_file: Path) -> Iterator[Store]:
    """A storage of each kind, with a study name no other run uses; the study is removed."""
    kind = request.param
    url = {
        "sqlite": lambda: f"sqlite:///{tmp_path}/studies.db",
        "journal": lambda: f"journal:{tmp_path}/study.log",
        "postgresql": lambda: request.getfixturevalue("pg_url"),  # fails if required and down
        "redis": lambda: request.getfixturevalue("redis_db"),  # a scratch database, wiped
    }[kind]()
    name = f"faults-{kind}-{uuid.uuid4().hex[:8]}"
    yield Store(kind, url, name, tmp_path / "runs", digits_file)
    if kind == "postgresql":
        try:
            optuna.delete_study(study_name=name, storage=_open_url(url))
        except KeyError:  # never created
            pass


# -- reading the study ---------------------------------------------------------------------


def _count(trials: list[FrozenTrial], *states: TrialState) -> int:
    return sum(t.state in states for t in trials)


def _when(moment: Any) -> float:
    """A trial's datetime (naive, local, as Optuna writes it) in ``time.time()`` seconds."""
    return moment.timestamp()


def _before(trials: list[FrozenTrial], retry: FrozenTrial) -> FrozenTrial:
    """The attempt that ``retry`` repeats (the last one its retry history names)."""
    number = retry.system_attrs["retry_history"][-1]
    return next(t for t in trials if t.number == number)


def _recomputed(
    trials: list[FrozenTrial], retries: list[FrozenTrial], resumed: dict[int, int] | None = None
) -> int:
    """Epochs that ``retries`` trained again: the epochs the attempt before each one had
    reported, less the epoch it resumed from (``resumed``: for retries that died before
    they could record it, from the study file's kill record)."""
    total = 0
    for retry in retries:
        done = max(_before(trials, retry).intermediate_values, default=0)
        start = retry.user_attrs.get("resumed_from_epoch", (resumed or {}).get(retry.number, 0))
        total += done - start
    return total


def _kills(folder: Path) -> list[dict[str, Any]]:
    """What each process that the study file killed wrote (time, epochs, resumed_from)."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("killed-*.json"))]


def _tokens(store: Store, step: str, n: int) -> Path:
    """A folder with ``n`` kill tokens for one step."""
    folder = store.runs.parent / f"tokens-{step}"
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"token-{i}").touch()
    return folder


# -- running the study ---------------------------------------------------------------------


def _search(
    store: Store,
    *,
    n_trials: int,
    tokens: Path | None = None,
    broken_workers: list[int] | None = None,
    **options: Any,
) -> SearchOutcome:
    """``search()`` the study with 2 spawned workers (unless told) and fast heartbeats."""
    trainer = load_trainer_from_file(
        FAULTS,
        runs_dir=str(store.runs),
        data=str(store.data),
        delay=0.03,
        nan_size=NAN,
        kill_tokens=str(tokens) if tokens is not None else None,
        broken_workers=broken_workers,
    )
    return search(
        trainer,
        epochs=EPOCHS,
        n_trials=n_trials,
        storage=store.url,
        study_name=store.name,
        objectives=OBJECTIVES,
        seed=0,
        heartbeat_interval=1,
        grace_period=2,
        timeout=120,  # a storage that never recovers a dead trial fails the test, not hangs
        **{"n_workers": 2, "enqueue": QUEUED, **options},
    )


def _command(store: Store, n_trials: int, *options: str) -> list[str]:
    """``hpo-trainer search`` on the study, as a user types it (``-o``: study options)."""
    args = [str(BIN / "hpo-trainer"), "search", str(FAULTS), "--storage", store.url]
    args += ["--study-name", store.name, "--runs-dir", str(store.runs), "--seed", "0"]
    args += ["--trials", str(n_trials), "--epochs", str(EPOCHS), "--workers", "2"]
    for objective in OBJECTIVES:
        args += ["--objective", objective]
    for option in (f"data={store.data}", *options):
        args += ["-o", option]
    return args


# -- the matrix ----------------------------------------------------------------------------


def test_every_storage_keeps_its_promises_through_the_faults(
    store: Store, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    _kill_every_worker_then_rerun(store)
    _sigterm_the_command(store)
    _rerun_with_a_worker_that_cannot_start(store, capfd, caplog)
    _max_failures_stop_the_search(store)
    with capfd.disabled():
        print()
        for scenario, row in store.figures.items():
            cells = " | ".join(f"{key} {value}" for key, value in row.items())
            print(f"fault matrix | {store.kind} | {scenario} | {cells}")


def _kill_every_worker_then_rerun(store: Store) -> None:
    """Steps 1 and 2 of the module docs (scenarios 2, 4 and 1)."""
    # Step 1: each worker dies mid-epoch 2 of its trial, once the other is training too.
    tokens = _tokens(store, "all", 2)
    outcome = _search(store, n_trials=2, tokens=tokens)
    assert outcome.stopped_by == "workers" and outcome.problem is not None  # exit 1
    assert sorted(code for _, code in outcome.dead_workers) == [-signal.SIGKILL] * 2
    assert "worker 0 killed by SIGKILL" in outcome.problem
    assert "worker 1 killed by SIGKILL" in outcome.problem
    assert "Run the same command again" in outcome.problem
    assert [k["epochs"] for k in _kills(tokens)] == [1, 1]
    trials = store.trials()
    assert _count(trials, *FINISHED) == 0
    # no worker is left to fail them: the next search does, after the grace period
    assert [t.number for t in trials if t.state == TrialState.RUNNING] == [0, 1]

    # Step 2: the same search again. Its workers fail and re-queue the dead trials once
    # they have watched them for a grace period; one retry dies again while the other
    # worker trains the NaN trial.
    tokens = _tokens(store, "one", 1)
    rerun = time.time()
    outcome = _search(store, n_trials=2, tokens=tokens)
    assert outcome.stopped_by == "budget" and outcome.problem is None  # exit 0
    assert [code for _, code in outcome.dead_workers] == [-signal.SIGKILL]
    (kill,) = _kills(tokens)
    trials = store.trials()
    assert _count(trials, *FINISHED) == 2  # the budget, exactly
    assert _count(trials, TrialState.RUNNING, TrialState.WAITING) == 0
    retries = [t for t in trials if "retry_history" in t.system_attrs]
    assert all(t.params == trials[first_attempt(t)].params for t in retries)
    done = [t for t in retries if t.state in FINISHED]
    assert sorted(t.user_attrs["retry_of"] for t in done) == [0, 1]
    assert all(t.user_attrs["resumed_from_epoch"] == 1 for t in done)
    assert all(sorted(t.intermediate_values) == [1, 2, 3] for t in done)
    (died,) = [t for t in retries if t.state == TrialState.FAIL]
    assert "failure" not in died.user_attrs  # failed by the watching worker, not counted
    assert kill["resumed_from"] == 1  # the retry that died had resumed from its checkpoint
    resumed = {died.number: kill["resumed_from"]}

    # scenario 2: the rerun retried both dead trials from their checkpoints
    first_retries = [t for t in retries if _before(trials, t).number in (0, 1)]
    assert len(first_retries) == 2
    store.figures["2 SIGKILL every worker, rerun"] = {
        "exit": "1, rerun 0",
        "finished": "2/2",
        "running": 0,
        "recomputed": _recomputed(trials, first_retries, resumed),
        # the rerun's start-up and one grace period
        "recover_s": round(min(_when(t.datetime_start) for t in first_retries) - rerun, 1),
    }

    # scenario 4: the NaN trial failed with its reason, was counted, and the search went on
    (nan,) = [t for t in trials if "failure" in t.user_attrs]
    assert nan.params["model.hidden_size"] == NAN and nan.state == TrialState.FAIL
    assert nan.user_attrs["failure"] == "non-finite value: val/acc=nan at its best epoch 3"
    assert len([t for t in outcome.study.trials if "failure" in t.user_attrs]) == 1
    later = [t for t in trials if t.datetime_start > nan.datetime_complete]
    assert later, "no trial started after the NaN trial failed"
    store.figures["4 NaN val/acc"] = {
        "exit": "0 (1 failure < max_failures 10)",
        "finished": "2/2",
        "running": 0,
        "recomputed": 0,
        "recover_s": round(
            min(_when(t.datetime_start) for t in later) - _when(nan.datetime_complete), 1
        ),
    }

    # scenario 1: a retry's worker died while another trial trained; the other worker
    # retried it again from its checkpoint and finished the budget
    others = [t for t in trials if t.number != died.number and t.datetime_complete is not None]
    assert any(
        _when(t.datetime_start) < kill["time"] < _when(t.datetime_complete) for t in others
    ), "no other trial was training when the worker died"
    (again,) = [t for t in retries if _before(trials, t).number == died.number]
    assert again.state in FINISHED and again.user_attrs["resumed_from_epoch"] == 1
    store.figures["1 SIGKILL one worker"] = {
        "exit": 0,
        "finished": "2/2",
        "running": 0,
        "recomputed": _recomputed(trials, [again]),
        # one grace period, and the other worker's trial in hand
        "recover_s": round(_when(again.datetime_start) - kill["time"], 1),
    }
    # at most the epoch whose checkpoint was being written, per retry
    assert _recomputed(trials, retries, resumed) <= len(retries)


def _sigterm_the_command(store: Store) -> None:
    """Step 3 of the module docs (scenario 3): the command is stopped by SIGTERM."""
    proc = subprocess.Popen(
        _command(store, 4, "delay=0.1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline and proc.poll() is None, "no trial got going"
            running = [t for t in store.trials() if t.state == TrialState.RUNNING]
            if len(running) == 2 and all(t.intermediate_values for t in running):
                break
            time.sleep(0.2)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        stopped_in = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert "interrupted" in err and "Traceback" not in err
    trials = store.trials()
    stopped = [t for t in trials if "interrupted" in t.user_attrs]
    assert len(stopped) == 2 and all(t.state == TrialState.FAIL for t in stopped)
    assert all(t.user_attrs["epochs"] >= 1 for t in stopped)
    assert _count(trials, TrialState.RUNNING) == 0
    assert _count(trials, TrialState.WAITING) == 2  # each stopped trial, queued again
    assert _count(trials, *FINISHED) == 2
    store.figures["3 SIGTERM, rerun"] = {"exit": "143, rerun 0", "stop_s": round(stopped_in, 1)}


def _rerun_with_a_worker_that_cannot_start(
    store: Store, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Step 4 of the module docs (scenarios 5 and 3): worker 1 raises as it starts."""
    capfd.readouterr()
    caplog.clear()
    rerun = time.time()
    outcome = _search(store, n_trials=4, broken_workers=[1])
    took = time.time() - rerun
    err = capfd.readouterr().err
    assert outcome.stopped_by == "budget" and outcome.problem is None  # exit 0
    assert outcome.dead_workers == ((1, 1),)
    assert "[worker 1] make_trainer() in" in err
    assert "failed: RuntimeError: worker-1 cannot load its model" in err
    # the search's own warning (the command prints its log records)
    assert "worker 1 exit code 1; the other workers finished the budget" in caplog.text
    trials = store.trials()
    assert _count(trials, *FINISHED) == 4
    assert _count(trials, TrialState.RUNNING, TrialState.WAITING) == 0
    stopped = {t.number: t for t in trials if "interrupted" in t.user_attrs}
    resumed = [t for t in trials if t.system_attrs.get("retry_history", [None])[-1] in stopped]
    assert len(resumed) == 2 and all(t.state in FINISHED for t in resumed)
    assert all(t.user_attrs["worker"] == 0 for t in resumed)
    for t in resumed:
        assert t.user_attrs["resumed_from_epoch"] == _before(trials, t).user_attrs["epochs"]
    store.figures["3 SIGTERM, rerun"].update(
        {
            "finished": "4/4",
            "running": 0,
            "recomputed": _recomputed(trials, resumed),
            # the rerun's start-up: the stopped trials wait in the queue
            "recover_s": round(min(_when(t.datetime_start) for t in resumed) - rerun, 1),
        }
    )
    store.figures["5 worker raises at start-up"] = {
        "exit": 0,
        "finished": "4/4",
        "running": 0,
        "recomputed": 0,
        "recover_s": f"{took:.1f} (the rerun, on the other worker)",
    }


def _max_failures_stop_the_search(store: Store) -> None:
    """Step 5 of the module docs (scenario 4): one more NaN trial reaches max_failures."""
    nan = {"model": {"hidden_size": NAN}, "optimizer": {"lr": 0.02}}
    outcome = _search(store, n_trials=5, n_workers=1, max_failures=2, enqueue=[nan])
    assert outcome.stopped_by == "failures" and outcome.problem is not None  # exit 1
    assert "2 trials failed (max_failures=2)" in outcome.problem
    assert "non-finite value: val/acc=nan" in outcome.problem
    trials = store.trials()
    assert _count(trials, *FINISHED) == 4
    assert _count(trials, TrialState.RUNNING, TrialState.WAITING) == 0
    store.figures["4 NaN val/acc"]["then"] = "max_failures 2: 2 failed, stops, exit 1"
