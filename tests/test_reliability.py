"""Crashes, signals and damaged files: the study survives and nothing finished is lost.

The chaos test prints its figures (kills, retries, epochs recomputed, trials lost); the
README's "Reliability" section quotes them.
"""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from scenarios import FINISHED, TUNABLE, search_code

BIN = Path(sys.executable).parent
STUDY = Path(__file__).resolve().parents[1] / "studies" / "digits_mlp.py"


def _wait_for_epochs(url, name, n, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
        except Exception:  # the database or the study does not exist yet
            continue
        if any(len(t.intermediate_values) >= n and t.state == TrialState.RUNNING for t in trials):
            return
    pytest.fail(f"no trial reached epoch {n} in time")


def _slow_study(tmp_path, delay="0.05"):
    """A study file of the tunable digits with slow batches, for the command line."""
    path = tmp_path / "slow_study.py"
    path.write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('tunable', {str(TUNABLE)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "SEARCH = {'epochs': 6, 'n_trials': 2, 'pruner': 'none'}\n"
        "def make_trainer(**options):\n"
        f"    return mod.make_trainer(delay={delay}, **options)\n"
    )
    return path


@pytest.mark.parametrize(
    ("signum", "code", "workers"), [(signal.SIGTERM, 143, 1), (signal.SIGINT, 130, 2)]
)
def test_signal_stops_workers_at_a_batch_boundary_and_requeues(tmp_path, signum, code, workers):
    study_file = _slow_study(tmp_path)
    url = f"sqlite:///{tmp_path}/runs/studies.db"
    proc = subprocess.Popen(
        [BIN / "hpo-trainer", "search", study_file, "--workers", str(workers), "--seed", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_epochs(url, "tunable", 2)
    sent = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == code, err
    assert took < 10, f"took {took:.1f}s to stop"
    assert "Traceback" not in err and "interrupted" in err
    study = optuna.load_study(study_name="tunable", storage=url)
    stopped = [t for t in study.trials if "interrupted" in t.user_attrs]
    assert stopped and all(t.state == TrialState.FAIL for t in stopped)
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(waiting) == len(stopped)  # each stopped trial is queued again
    assert sum(t.state in FINISHED for t in study.trials) < 2  # not counted as finished
    # running the search again finishes the study, resuming from the checkpoints
    subprocess.run(
        [BIN / "hpo-trainer", "search", study_file, "--seed", "0"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=180,
    )
    study = optuna.load_study(study_name="tunable", storage=url)
    assert sum(t.state in FINISHED for t in study.trials) == 2
    retries = [t for t in study.trials if "retry_of" in t.user_attrs]
    assert retries and all(t.user_attrs.get("resumed_from_epoch", 0) >= 1 for t in retries)


def test_sigterm_during_final_training_then_resume(tmp_path):
    params = tmp_path / "p.json"
    params.write_text(
        json.dumps({"params": {"optimizer": {"lr": 0.05}, "model": {"hidden_size": 32}}})
    )
    study_file = _slow_study(tmp_path, delay="0.02")
    cmd = [
        BIN / "hpo-trainer",
        "train",
        study_file,
        "--params",
        params,
        "--epochs",
        "8",
        "--save-every",
        "1",
    ]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("runs/tunable-*/checkpoints/epoch-0002.pt")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "--resume" in err
    run_dir = next(tmp_path.glob("runs/tunable-*"))
    out = subprocess.run(
        [*cmd, "--resume", run_dir], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().endswith(run_dir.name)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 8


def test_damaged_trial_checkpoint_restarts_the_retry_with_a_log_line(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    runs = tmp_path / "runs"
    code = search_code(url, runs, "tunable")
    optuna.create_study(study_name="tunable", storage=url).enqueue_trial(
        {"optimizer.lr": 0.05, "model.hidden_size": 32}
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        _wait_for_epochs(url, "tunable", 3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpt = runs / "tunable" / "trial-0" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])  # truncated, as by a full disk
    rerun = subprocess.run(
        [sys.executable, "-c", "import logging; logging.basicConfig(level=logging.INFO)\n" + code],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "starts over" in rerun.stderr and "damaged" in rerun.stderr
    study = optuna.load_study(study_name="tunable", storage=url)
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 0)
    assert retry.state == TrialState.COMPLETE and "resumed_from_epoch" not in retry.user_attrs


def test_chaos_random_sigkills_lose_no_trial(tmp_path, capsys):
    """4 workers; every 2 s one of them is SIGKILLed and a new one started, for 20 s."""
    url = f"sqlite:///{tmp_path}/study.db"
    runs = tmp_path / "runs"
    budget = 20
    code = search_code(url, runs, "chaos", trials=budget)
    code = code.replace("delay=0.05", "delay=0.03, crashy=False")
    optuna.create_study(study_name="chaos", storage=url)
    rng = random.Random(0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    started = {}

    def start():
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started[proc] = time.monotonic()
        return proc

    workers = [start() for _ in range(4)]
    try:
        kills = 0
        end = time.monotonic() + 20
        time.sleep(5)  # let them import torch and start trials
        while time.monotonic() < end:
            # kill workers that are past start-up, so that kills land in trials
            alive = [w for w in workers if w.poll() is None and time.monotonic() - started[w] > 4]
            if not alive:
                time.sleep(0.5)
                continue
            victim = rng.choice(alive)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            workers.remove(victim)
            workers.append(start())
            time.sleep(2)
        for w in workers:
            assert w.wait(timeout=300) == 0
    finally:
        for w in workers:  # never leave a worker behind, whatever happened
            if w.poll() is None:
                w.kill()
                w.wait()
    study = optuna.load_study(study_name="chaos", storage=url)
    trials = study.trials
    states = Counter(t.state for t in trials)
    finished = states[TrialState.COMPLETE] + states[TrialState.PRUNED]
    retries = [t for t in trials if "retry_of" in t.user_attrs]
    by_number = {t.number: t for t in trials}
    recomputed = 0
    for r in retries:
        # the attempt this retry replaced: the latest earlier attempt of the same trial
        earlier = [
            t
            for t in trials
            if t.number < r.number
            and t.state == TrialState.FAIL
            and (
                t.number == r.user_attrs["retry_of"]
                or t.user_attrs.get("retry_of") == r.user_attrs["retry_of"]
            )
        ]
        killed = by_number[max(t.number for t in earlier)]
        recomputed += max(
            0, len(killed.intermediate_values) - r.user_attrs.get("resumed_from_epoch", 0)
        )
    with sqlite3.connect(tmp_path / "study.db") as con:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    with capsys.disabled():
        print(
            f"\nchaos: kills={kills} retries={len(retries)} epochs_recomputed={recomputed} "
            f"trials_lost={budget - finished} finished={finished}/{budget} "
            f"integrity={integrity}"
        )
    assert finished == budget
    assert states[TrialState.RUNNING] == 0 and states[TrialState.WAITING] == 0
    assert integrity == "ok"
    assert kills >= 5
    assert recomputed <= kills
    assert all(
        r.state in FINISHED
        for r in retries
        if r.number
        == max(t.number for t in retries if t.user_attrs["retry_of"] == r.user_attrs["retry_of"])
    )


def test_status_of_a_running_search_shows_epochs_workers_and_time_left(tmp_path):
    study_file = _slow_study(tmp_path, delay="0.15")  # about 8 s per trial
    url = f"sqlite:///{tmp_path}/runs/studies.db"
    (tmp_path / "runs").mkdir()
    optuna.create_study(study_name="tunable", storage=url).enqueue_trial(
        {"optimizer.lr": 0.05, "model.hidden_size": 32}
    )
    proc = subprocess.Popen(
        [BIN / "hpo-trainer", "search", study_file, "--trials", "3", "--seed", "0", "-q"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def status(*args):
        out = subprocess.run(
            [BIN / "hpo-trainer", "status", *args], cwd=tmp_path, capture_output=True, text=True
        )
        return out.stdout if out.returncode == 0 else ""

    try:
        deadline = time.monotonic() + 120
        table = ""
        while not ("running: trial" in table and "left" in table):
            assert time.monotonic() < deadline, f"no finished and running trial seen: {table}"
            time.sleep(0.3)
            table = status()
        assert "at epoch" in table and "(worker 0 on " in table
        summary = json.loads(status("--json"))[0]
        assert summary["budget"] == 3 and summary["eta_seconds"] > 0
        assert summary["mean_trial_seconds"] > 0
    finally:
        proc.terminate()
        proc.wait(timeout=60)
