"""Kept trials' checkpoints as artifacts in the store beside the study (a real SQLite study,
real files): attached when a trial is among the best, removed with its checkpoint, and a
failing store never stops the clean-up. The dashboard's view of them is in test_dashboard.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from hpo_trainer.search import artifacts
from hpo_trainer.search import trial as trial_module
from hpo_trainer.search.config import Budget, Durability, SearchConfig, StudyIdentity
from hpo_trainer.search.trial import cleanup_checkpoints, trial_dir


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("sqlite:///db/studies.db", "db/artifacts"),
        ("journal:logs/study.log", "logs/artifacts"),
        ("postgresql+psycopg://u:pw@host/db", "runs/artifacts"),
        ("redis://127.0.0.1:6379/0", "runs/artifacts"),
    ],
)
def test_the_store_sits_beside_a_file_storage_else_in_the_runs_dir(url, where):
    assert artifacts.store_dir(url, "runs") == Path(where)


@pytest.fixture
def study_cfg(tmp_path, monkeypatch):
    monkeypatch.setattr(trial_module, "_REMOVED", {})
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(storage=url, study_name="art")
    cfg = SearchConfig(
        identity=StudyIdentity(study_name="art", storage=url),
        budget=Budget(epochs=1, n_trials=5),
        durability=Durability(keep_checkpoints=1, runs_dir=str(tmp_path / "runs")),
    )
    return study, cfg


def _finish(study: optuna.Study, cfg: SearchConfig, state: TrialState, value: float | None):
    """Add a finished trial with a checkpoint, and clean up as its worker does."""
    study.add_trial(create_trial(state=state, value=value))
    trial = study.get_trials()[-1]
    trial_dir(cfg, trial.number).mkdir(parents=True)
    (trial_dir(cfg, trial.number) / "last.pt").write_bytes(f"weights {trial.number}".encode())
    cleanup_checkpoints(study, cfg, completed=trial._trial_id)
    return trial


def _store_files(cfg: SearchConfig) -> dict[str, bytes]:
    folder = artifacts.store_dir(cfg.identity.storage, cfg.durability.runs_dir)
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def test_the_best_trial_carries_its_checkpoint_and_a_freed_one_loses_it(study_cfg):
    study, cfg = study_cfg
    first = _finish(study, cfg, TrialState.COMPLETE, 0.5)
    (meta,) = artifacts.trial_artifacts(study)[first._trial_id]
    assert meta["filename"] == "trial-0-last.pt"
    assert _store_files(cfg) == {meta["artifact_id"]: b"weights 0"}

    _finish(study, cfg, TrialState.PRUNED, None)  # pruned: never attached
    better = _finish(study, cfg, TrialState.COMPLETE, 0.1)  # pushes trial 0 out (keep 1)
    live = artifacts.trial_artifacts(study)
    assert list(live) == [better._trial_id]
    assert _store_files(cfg) == {live[better._trial_id][0]["artifact_id"]: b"weights 2"}
    assert not (trial_dir(cfg, 0) / "last.pt").exists()
    # the freed record is null, as the dashboard's own delete leaves it; Optuna's API still reads
    attrs = study._storage.get_study_system_attrs(study._study_id)
    assert attrs[f"{artifacts.TRIAL_PREFIX}{first._trial_id}:{meta['artifact_id']}"] == "null"
    assert optuna.artifacts.get_all_artifact_meta(study) == []


def test_a_failing_store_warns_and_the_clean_up_goes_on(study_cfg, caplog):
    study, cfg = study_cfg
    artifacts.store_dir(cfg.identity.storage, cfg.durability.runs_dir).write_text(
        "a file where the store goes"
    )
    _finish(study, cfg, TrialState.COMPLETE, 0.5)
    with caplog.at_level(logging.WARNING, logger="hpo_trainer.search.artifacts"):
        _finish(study, cfg, TrialState.COMPLETE, 0.1)
    assert "trial 1: its checkpoint" in caplog.text and "the search goes on" in caplog.text
    assert artifacts.trial_artifacts(study) == {}
    assert not (trial_dir(cfg, 0) / "last.pt").exists()  # the checkpoint clean-up still ran
    assert (trial_dir(cfg, 1) / "last.pt").exists()


def test_a_run_for_a_study_that_is_not_there_is_not_attached(tmp_path, caplog):
    (tmp_path / "summary.json").write_text(json.dumps({"epochs": 1}))
    url = f"sqlite:///{tmp_path}/missing.db"
    with caplog.at_level(logging.WARNING, logger="hpo_trainer.search.artifacts"):
        ids = artifacts.attach_run(url, "nope", [tmp_path / "summary.json"], runs_dir=tmp_path)
    assert ids == []
    assert "were not attached to study 'nope'" in caplog.text
    assert not (tmp_path / "missing.db").exists()


def test_migrate_points_copied_checkpoint_artifacts_at_the_targets_trials(study_cfg, tmp_path):
    from hpo_trainer.search.migrate import migrate

    study, cfg = study_cfg
    _finish(study, cfg, TrialState.COMPLETE, 0.5)
    best = _finish(study, cfg, TrialState.COMPLETE, 0.1)  # trial 1 keeps its checkpoint
    (meta,) = artifacts.trial_artifacts(study)[best._trial_id]
    target = f"sqlite:///{tmp_path}/target.db"
    other = optuna.create_study(storage=target, study_name="other")  # target ids are shifted
    for _ in range(3):
        other.add_trial(create_trial(state=TrialState.COMPLETE, value=1.0))
    migrate(cfg.identity.storage, target, study_name="art")
    copy = optuna.load_study(study_name="art", storage=target)
    moved = artifacts.trial_artifacts(copy)
    assert list(moved) == [copy.trials[1]._trial_id] != [best._trial_id]
    assert moved[copy.trials[1]._trial_id][0]["artifact_id"] == meta["artifact_id"]
    assert artifacts.trial_artifacts(study) == {best._trial_id: [meta]}  # the source as it was
