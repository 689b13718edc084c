"""Scenarios shared by the storage tests: kill a worker mid-trial, then resume the search."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hpo_trainer.search.storage import open_storage

TUNABLE = Path(__file__).resolve().parent / "studies" / "tunable_digits.py"
#: Where the ``hpo-trainer`` command of this environment lives.
BIN = Path(sys.executable).parent
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _open(url: str) -> optuna.storages.BaseStorage:
    """Open any storage URL the product takes (``journal:``, ``redis://`` too), as status does."""
    return open_storage(url)


def search_code(url: str, runs_dir: Path, study_name: str, *, trials: int = 2) -> str:
    """Python source that runs the tunable study's search (slow epochs) against ``url``."""
    return (
        "from hpo_trainer.facade.studyfile import load_trainer_from_file as load\n"
        f"tr = load({str(TUNABLE)!r}, runs_dir={str(runs_dir)!r}, delay=0.05)\n"
        f"tr.hyp_opt(epochs=6, iters={trials}, storage={url!r}, study_name={study_name!r},\n"
        "           pruner='none', seed=0, heartbeat_interval=1, grace_period=2)\n"
    )


def kill_mid_trial_then_resume(url: str, runs_dir: Path, study_name: str) -> int:
    """Start a search, SIGKILL it after trial 0 reported 3 epochs, run it again to the end.

    Returns:
        The number of epochs trial 0 had reported when its worker was killed.
    """
    study = optuna.create_study(study_name=study_name, storage=_open(url))
    study.enqueue_trial({"optimizer.lr": 0.05, "model.hidden_size": 32})
    code = search_code(url, runs_dir, study_name)
    proc = subprocess.Popen([sys.executable, "-c", code])
    steps = 0
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and steps < 3:
            time.sleep(0.2)
            trials = study.get_trials(deepcopy=False)
            steps = len(trials[0].intermediate_values) if trials else 0
        assert steps >= 3, "the first trial did not get to epoch 3 in time"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=180)
    return steps


def check_resumed(url: str, study_name: str, killed_at: int) -> None:
    """Assert that trial 0's retry resumed from its checkpoint and the study finished."""
    study = optuna.load_study(study_name=study_name, storage=_open(url))
    first = study.trials[0]
    assert first.state == TrialState.FAIL and "failure" not in first.user_attrs
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 0)
    assert retry.state == TrialState.COMPLETE
    # the checkpoint of the last reported epoch may still have been in flight (written in
    # the background while the next epoch trains): the one before it is the promise
    assert retry.user_attrs["resumed_from_epoch"] >= killed_at - 1 >= 2
    assert retry.params == first.params
    assert sorted(retry.intermediate_values) == [1, 2, 3, 4, 5, 6]
    for step, value in first.intermediate_values.items():
        assert retry.intermediate_values[step] == value
    assert sum(t.state in FINISHED for t in study.trials) == 2


def hpo(*args, cwd, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``hpo-trainer ARGS`` in ``cwd`` as a user does; with ``check``, fail on exit != 0."""
    proc = subprocess.run(
        [BIN / "hpo-trainer", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
