"""What a search tells its caller: exit codes, provenance, and where it writes.

Each test drives ``hpo-trainer search`` (or ``search()``) into one way of stopping short or
of being misused, and checks the exit code, the one-paragraph message, and the files left.
"""

import functools
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from scenarios import BIN
from scenarios import hpo as run_hpo

from hpo_trainer import cli
from hpo_trainer.facade.studyfile import load_trainer_from_file
from hpo_trainer.search import search
from hpo_trainer.search.heartbeat import HeartbeatWatch, Requeue, beat, root_number
from hpo_trainer.search.progress import snapshot
from hpo_trainer.search.storage import open_storage

ROOT = Path(__file__).resolve().parents[1]
TUNABLE = ROOT / "tests" / "studies" / "tunable_digits.py"
DIGITS = ROOT / "studies" / "digits_mlp.py"


hpo = functools.partial(run_hpo, check=False)  # each test checks the exit code


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")}


def test_a_search_whose_every_trial_fails_exits_1_and_says_where_the_tracebacks_are(tmp_path):
    proc = hpo(
        "search", TUNABLE, "-o", "crash_all=true", "--trials", "3", "--epochs", "1", cwd=tmp_path
    )
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "stopped short of its budget (0/3 trials finished)" in err
    assert "10 trials failed (max_failures=10)" in err
    assert "ValueError: hidden_size 13 is unlucky" in err and "'traceback'" in err
    assert "Traceback (most recent call last)" not in err
    study = optuna.load_study(
        study_name="tunable", storage=f"sqlite:///{tmp_path}/runs/studies.db"
    )
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 10 and all("traceback" in t.user_attrs for t in failed)


def test_a_search_whose_workers_all_died_exits_1_naming_them(tmp_path):
    proc = hpo(
        "search",
        TUNABLE,
        "-o",
        "die_always=true",
        "--trials",
        "4",
        "--epochs",
        "1",
        "--workers",
        "2",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    assert "stopped short of its budget (0/4 trials finished)" in proc.stderr
    assert "worker 0 killed by SIGKILL" in proc.stderr
    assert "worker 1 killed by SIGKILL" in proc.stderr
    assert "run the same command again" in proc.stderr.lower()


def test_a_dead_worker_is_named_and_the_search_succeeds_when_the_others_finish(tmp_path):
    tr = load_trainer_from_file(
        TUNABLE, runs_dir=str(tmp_path / "runs"), crashy=False, die_once=str(tmp_path / "died")
    )
    outcome = search(
        tr,
        epochs=2,
        n_trials=4,
        n_workers=2,
        pruner="none",
        heartbeat_interval=1,
        grace_period=2,
    )
    assert (tmp_path / "died").exists()
    assert outcome.complete and outcome.stopped_by == "budget" and outcome.finished == 4
    assert [code for _, code in outcome.dead_workers] == [-signal.SIGKILL]
    retried = [t for t in outcome.study.trials if "retry_of" in t.user_attrs]
    # the dead worker's trial ran again with its parameters and finished (complete, or pruned
    # when its sampled learning rate diverges: the study's lr range reaches 1e8 on purpose)
    assert len(retried) == 1
    first = outcome.study.trials[retried[0].user_attrs["retry_of"]]
    assert first.state == TrialState.FAIL and "failure" not in first.user_attrs
    assert retried[0].params == first.params
    assert retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.mark.parametrize("name", ["../../escape", "/tmp/abs-study", "..", "a/b", "c:d"])
def test_study_names_never_put_files_outside_the_runs_dir(tmp_path, name):
    before = files_under(tmp_path)
    proc = hpo(
        "search", DIGITS, "--study-name", name, "--trials", "1", "--epochs", "1", cwd=tmp_path
    )
    assert proc.returncode == 1, proc.stderr
    assert "study_name names the study's folder inside runs_dir" in proc.stderr
    assert repr(name) in proc.stderr
    assert files_under(tmp_path) == before  # nothing written at all
    assert not Path("/tmp/abs-study").exists()


def test_a_runs_dir_that_is_a_file_is_refused_before_the_study_changes(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    url = f"sqlite:///{tmp_path}/s.db"
    proc = hpo("search", DIGITS, "--storage", url, "--trials", "1", "--epochs", "1", cwd=tmp_path)
    assert proc.returncode == 1
    assert "'runs' is a file, not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "s.db").exists()


def completed(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            query = "SELECT COUNT(*) FROM trials WHERE state='COMPLETE'"
            return con.execute(query).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_a_study_file_deleted_during_the_search_stops_it_and_nothing_is_recreated(tmp_path):
    db = tmp_path / "runs" / "studies.db"
    proc = subprocess.Popen(
        [BIN / "hpo-trainer", "search", TUNABLE, "-o", "delay=0.02", "-o", "crashy=false"]
        + ["--trials", "6", "--epochs", "3", "--pruner", "none"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and completed(db) < 1:
        time.sleep(0.2)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "was removed or replaced while the search ran" in err
    assert not db.exists()


def test_continuing_a_study_on_another_metric_is_refused(tmp_path):
    first = hpo("search", DIGITS, "--trials", "1", "--epochs", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = hpo(
        "search", DIGITS, "--trials", "2", "--epochs", "1", "--metric", "train/loss", cwd=tmp_path
    )
    assert again.returncode == 1
    assert "scores its trials by 'val/loss', not 'train/loss'" in again.stderr
    study = optuna.load_study(
        study_name="digits_mlp", storage=f"sqlite:///{tmp_path}/runs/studies.db"
    )
    assert len(study.trials) == 1


def test_continuing_a_study_with_another_study_file_is_refused(tmp_path):
    other = tmp_path / "other.py"
    other.write_text(DIGITS.read_text())
    assert hpo("search", DIGITS, "--trials", "1", "--epochs", "1", cwd=tmp_path).returncode == 0
    proc = hpo("search", other, "--study-name", "digits_mlp", "--trials", "2", cwd=tmp_path)
    assert proc.returncode == 1
    assert "was searched with the study file" in proc.stderr and str(other) in proc.stderr


def test_export_reports_the_best_trials_own_epochs_and_metric(tmp_path):
    assert hpo("search", DIGITS, "--trials", "1", "--epochs", "1", cwd=tmp_path).returncode == 0
    proc = hpo(
        "search", DIGITS, "--trials", "3", "--epochs", "4", "--pruner", "none", cwd=tmp_path
    )
    assert proc.returncode == 0 and "began with 1 epochs per trial" in proc.stderr
    assert hpo("export", "--out", "best.json", cwd=tmp_path).returncode == 0
    import json

    record = json.loads((tmp_path / "best.json").read_text())
    study = optuna.load_study(
        study_name="digits_mlp", storage=f"sqlite:///{tmp_path}/runs/studies.db"
    )
    best = study.best_trial
    assert record["trial"] == best.number
    assert record["epochs"] == best.user_attrs["max_epochs"]
    assert record["metric"] == "val/loss"


@pytest.mark.parametrize(
    "args", [["--timeout", "-1"], ["--timeout", "0"], ["--timeout", "nan"], ["--seed", "-1"]]
)
def test_bad_numbers_are_bad_usage(tmp_path, args):
    proc = hpo("search", DIGITS, *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert f"argument {args[0]}" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(os.name != "posix", reason="process groups and SIGINT are POSIX")
def test_ctrl_c_while_starting_up_is_one_line_and_exit_130(tmp_path):
    proc = subprocess.Popen(
        [BIN / "hpo-trainer", "search", DIGITS, "--workers", "2", "--trials", "4"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # as at a terminal: a shell's background jobs (CI) start with SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(2.5)  # the parent has started its workers; they are importing torch
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C at a terminal does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


# -- how status and the progress line count trials that were stopped or retried ----------


def _stopped_by_ctrl_c(study: optuna.Study) -> None:
    """Run a trial until Ctrl-C stops it, as ``trial.decide`` and ``trial._write`` leave it:
    FAIL with the ``interrupted`` attribute, and a WAITING copy with its params."""
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.report(0.9, 1)
    trial.set_user_attr("interrupted", "stopped after epoch 1; re-queued")
    study.tell(trial, state=TrialState.FAIL)
    Requeue()(study, study.trials[trial.number])


def _retry_completes(study: optuna.Study, value: float) -> None:
    """The waiting copy is asked again (same params) and completes."""
    retry = study.ask()
    root = root_number(study.trials[retry.number])
    assert root != retry.number, "not the re-queued copy"
    retry.set_user_attr("retry_of", root)
    study.tell(retry, value)


def _status(url: str, *extra: str, capsys) -> str:
    assert cli.main(["status", "--storage", url, *extra]) == 0
    return capsys.readouterr().out


def test_a_trial_stopped_by_ctrl_c_and_completed_on_retry_is_not_a_failure(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/studies.db"
    storage = open_storage(url)
    study = optuna.create_study(study_name="stopped", storage=storage)
    _stopped_by_ctrl_c(study)
    _retry_completes(study, 0.25)

    line = snapshot(study, total=2).line()
    assert line == "1/2 trials finished (1 complete, 0 pruned, 0 failed) | best 0.25 (trial 1)"
    out = _status(url, capsys=capsys)
    assert "study stopped (minimize value): 2 trials: complete 1, interrupted 1\n" in out
    assert "fail" not in out
    (summary,) = json.loads(_status(url, "--json", capsys=capsys))
    assert summary["states"] == {"INTERRUPTED": 1, "COMPLETE": 1}


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the worker beats, not optimize
def test_status_and_progress_count_only_trials_that_failed_by_themselves(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/studies.db"
    storage = open_storage(url)
    study = optuna.create_study(study_name="mixed", storage=storage)
    _stopped_by_ctrl_c(study)  # trial 0, re-queued as trial 1
    _retry_completes(study, 0.5)
    crashed = study.ask()  # trial 2: its own code raised
    crashed.set_user_attr("failure", "ValueError: hidden_size 13 is unlucky")
    study.tell(crashed, state=TrialState.FAIL)
    dead = study.ask()  # trial 3: its worker dies after one heartbeat
    dead.suggest_float("lr", 1e-4, 1e-1, log=True)
    beat(storage, dead._trial_id, 1)
    now = [0.0]
    watch = HeartbeatWatch(storage, grace_period=1, clock=lambda: now[0])
    watch.read(study)  # a worker sees it running
    now[0] = 5.0  # no beat for longer than the grace period: failed, trial 4 queued
    watch.read(study)
    assert study.trials[3].state == TrialState.FAIL and "failure" not in study.trials[3].user_attrs
    _retry_completes(study, 0.3)

    line = snapshot(study, total=3).line()
    assert line == "2/3 trials finished (2 complete, 0 pruned, 1 failed) | best 0.3 (trial 4)"
    out = _status(url, capsys=capsys)
    assert "study mixed (minimize value): 5 trials: complete 2, fail 1, interrupted 1, " in out
    assert "retried 1\n" in out
    assert "best: trial 4, value 0.3" in out
