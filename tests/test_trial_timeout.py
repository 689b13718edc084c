"""A time limit per trial: a trial past it stops at the next batch and is pruned."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpo_trainer import ConfigError, Hyperparameters
from hpo_trainer.facade.studyfile import load_trainer_from_file
from hpo_trainer.search.engine import search

HERE = Path(__file__).resolve().parent
TUNABLE = HERE / "studies" / "tunable_digits.py"
BIN = Path(sys.executable).parent


def _slow(tmp_path: Path, delay: float):
    """The tunable digits study: ``delay`` seconds per training batch, a tame learning rate."""
    tr = load_trainer_from_file(
        TUNABLE, runs_dir=tmp_path / "runs", delay=delay, crashy=False, batch_size=256
    )
    opt = Hyperparameters()
    opt.set_range("lr", -2, -1)
    opt.set_value("momentum", 0.9)
    tr.set_hyperparameters(opt)
    return tr


def test_a_trial_past_its_limit_is_pruned_within_one_batch(tmp_path):
    delay, limit = 0.25, 3.0
    tr = _slow(tmp_path, delay)
    outcome = search(
        tr,
        epochs=20,
        n_trials=2,
        trial_timeout=limit,
        pruner="none",
        seed=0,
        storage=f"sqlite:///{tmp_path}/study.db",
    )
    # Pruned trials are finished: the budget is reached.
    assert outcome.complete and outcome.finished == 2
    trials = outcome.study.trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    for t in trials:
        epochs = t.user_attrs["epochs"]
        assert 1 <= epochs < 20
        assert t.user_attrs["pruned"] == f"time limit of 3 s reached in epoch {epochs + 1}"
        # The completed epochs' values stay; the last one is the trial's value.
        assert sorted(t.intermediate_values) == list(range(1, epochs + 1))
        assert t.value == t.intermediate_values[epochs] and math.isfinite(t.value)
        # The overshoot is one batch at most (plus building the run and closing the files).
        overshoot = t.user_attrs["wall_time"] - limit
        print(f"trial {t.number}: wall {t.user_attrs['wall_time']:.3f} s, limit {limit} s")
        assert 0 <= overshoot < delay + 0.2, t.user_attrs["wall_time"]


@pytest.mark.parametrize("bad", [0, -1.5, math.inf, math.nan, "60", True])
def test_a_bad_trial_timeout_is_refused_before_anything_is_written(tmp_path, bad):
    tr = _slow(tmp_path, 0.0)
    with pytest.raises(ConfigError, match="trial_timeout must be a positive, finite number"):
        search(tr, epochs=1, n_trials=1, trial_timeout=bad, storage=f"sqlite:///{tmp_path}/s.db")
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("bad", ["0", "-3", "inf", "soon"])
def test_the_command_line_refuses_a_bad_trial_timeout_with_exit_2(tmp_path, bad):
    proc = subprocess.run(
        [BIN / "hpo-trainer", "search", TUNABLE, "--trial-timeout", bad],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--trial-timeout" in proc.stderr and "seconds" in proc.stderr
