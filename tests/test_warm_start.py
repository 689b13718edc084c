"""Warm starts: known configurations (params files, dicts, an earlier study's best) run first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from hpo_trainer import ConfigError
from hpo_trainer.facade.studyfile import load_trainer_from_file
from hpo_trainer.search.engine import search

HERE = Path(__file__).resolve().parent
TUNABLE = HERE / "studies" / "tunable_digits.py"
BIN = Path(sys.executable).parent
KNOWN = {"optimizer": {"lr": 0.05}, "model": {"hidden_size": 32}}


def _tunable(tmp_path: Path):
    return load_trainer_from_file(TUNABLE, runs_dir=tmp_path / "runs", crashy=False)


def _search(tr, tmp_path, **options):
    options = {"epochs": 1, "n_trials": 3, "seed": 0, "pruner": "none", **options}
    return search(tr, storage=f"sqlite:///{tmp_path}/study.db", **options)


def test_enqueued_configurations_run_first_count_toward_the_budget_and_run_once(tmp_path):
    tr = _tunable(tmp_path)
    exported = tmp_path / "best.json"
    params = {"optimizer": {"lr": 0.002}, "model": {"hidden_size": 16}}
    exported.write_text(json.dumps({"format": "hpo-trainer/params-v1", "params": params}))
    outcome = _search(tr, tmp_path, enqueue=[exported, KNOWN])
    trials = outcome.study.trials
    assert outcome.complete and len(trials) == 3  # the two queued ones are in the budget
    assert trials[0].params == {"optimizer.lr": 0.002, "model.hidden_size": 16}
    assert trials[1].params == {"optimizer.lr": 0.05, "model.hidden_size": 32}
    assert trials[0].user_attrs["enqueued_from"] == str(exported)
    # The same command again (and with a larger budget) queues nothing twice.
    again = _search(tr, tmp_path, n_trials=4, enqueue=[exported, KNOWN])
    assert len(again.study.trials) == 4
    lrs = [t.params["optimizer.lr"] for t in again.study.trials]
    assert lrs.count(0.002) == 1 and lrs.count(0.05) == 1


def test_parameters_outside_the_space_are_refused_before_any_trial(tmp_path):
    tr = _tunable(tmp_path)
    bad = {"optimizer": {"lr": 1e9, "momentum": 0.5}, "model": {"hidden_size": 64}}
    with pytest.raises(ConfigError) as info:
        _search(tr, tmp_path, enqueue=[bad, tmp_path / "missing.json"])
    message = str(info.value)
    assert "enqueue[0]: optimizer.lr must lie in [0.001, 100000000.0], got 1000000000.0" in message
    assert "enqueue[0]: optimizer.momentum=0.5 is not searched" in message
    assert "enqueue[0]: model.hidden_size must be one of [16, 32], got 64" in message
    assert "missing.json' does not exist" in message
    assert not (tmp_path / "study.db").exists()


def test_a_search_warm_starts_from_the_best_trials_of_an_earlier_study(tmp_path):
    tr = _tunable(tmp_path)
    old = _search(tr, tmp_path, study_name="old", n_trials=4).study
    best = sorted(old.trials, key=lambda t: t.value)[:2]
    new = _search(tr, tmp_path, study_name="new", warm_start_from="old", warm_start_top=2)
    assert new.complete and len(new.study.trials) == 3
    assert [t.params for t in new.study.trials[:2]] == [t.params for t in best]
    with pytest.raises(ConfigError, match="no study 'nope' in that storage .*old"):
        _search(tr, tmp_path, study_name="new2", warm_start_from="nope")


def test_the_command_line_enqueues_a_params_file(tmp_path):
    known = tmp_path / "known.json"
    known.write_text(json.dumps(KNOWN))
    url = f"sqlite:///{tmp_path}/cli.db"
    args = [BIN / "hpo-trainer", "search", TUNABLE, "-o", "crashy=false", "--storage", url]
    args += ["--trials", "1", "--epochs", "1", "--enqueue", known, "--runs-dir", tmp_path]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(study_name="tunable", storage=url)
    assert [t.params for t in study.trials] == [{"optimizer.lr": 0.05, "model.hidden_size": 32}]
