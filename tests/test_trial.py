"""Checkpoint clean-up after each trial: which trial folders keep their checkpoint.

Kept: the ``keep`` best completed trials (by the study's direction) and trials whose worker
died or was stopped (no ``failure`` attribute: their retry resumes from the checkpoint).
Removed: the other completed trials, pruned ones and those that failed by an exception. A
retry (``retry_of``) shares its first attempt's folder, so it is judged by that number.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from hpo_trainer.search import trial as trial_module
from hpo_trainer.search.config import Budget, Durability, SearchConfig, StudyIdentity
from hpo_trainer.search.trial import checkpoints_to_remove, cleanup_checkpoints, trial_dir

pytestmark = pytest.mark.fast

C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL
DEAD = {}  # a dead or stopped worker's trial: failed, no failure attribute
CRASH = {"failure": "RuntimeError: boom"}
STOPPED = {"interrupted": "stopped after epoch 2; re-queued"}


def _study(direction: str, rows) -> optuna.Study:
    """A study whose trials are ``rows`` of (state, value, user attrs), numbered in order."""
    study = optuna.create_study(direction=direction)
    for state, value, attrs in rows:
        study.add_trial(
            create_trial(
                state=state,
                value=value if state == C else None,
                user_attrs=attrs,
                intermediate_values={1: value} if value is not None else {},
            )
        )
    return study


CASES = [
    pytest.param(
        "minimize",
        2,
        [(C, 0.5, {}), (C, 0.1, {}), (C, 0.3, {}), (C, 0.9, {})],
        {0, 3},
        id="minimize-keeps-the-two-lowest",
    ),
    pytest.param(
        "maximize",
        2,
        [(C, 0.5, {}), (C, 0.1, {}), (C, 0.3, {}), (C, 0.9, {})],
        {1, 2},
        id="maximize-keeps-the-two-highest",
    ),
    pytest.param(
        "minimize",
        0,
        [(C, 0.5, {}), (C, 0.1, {})],
        {0, 1},
        id="keep-none",
    ),
    pytest.param(
        "minimize",
        5,
        [(C, 0.5, {}), (C, 0.1, {})],
        set(),
        id="keep-more-than-there-are",
    ),
    pytest.param(
        "minimize",
        1,
        [(C, 0.5, {}), (P, 0.01, {"pruned": "pruned after epoch 1"}), (F, None, CRASH)],
        {1, 2},
        id="pruned-and-crashed-go-even-with-low-values",
    ),
    pytest.param(
        "minimize",
        0,
        [(F, None, DEAD), (F, None, STOPPED), (F, None, CRASH)],
        {2},
        id="dead-and-stopped-workers-keep-theirs",
    ),
    pytest.param(
        "minimize",
        1,
        [(F, None, DEAD), (C, 0.2, {"retry_of": 0}), (C, 0.1, {})],
        {0},
        id="a-retry-is-its-first-attempts-folder",
    ),
    pytest.param(
        "minimize",
        1,
        [(F, None, DEAD), (C, 0.05, {"retry_of": 0}), (C, 0.1, {})],
        {2},
        id="the-best-retry-keeps-its-first-attempts-folder",
    ),
    pytest.param(
        "minimize",
        3,
        [(F, None, DEAD), (F, None, {**CRASH, "retry_of": 0}), (C, 0.1, {})],
        {0},
        id="a-retry-that-crashed-frees-its-first-attempts-folder",
    ),
    pytest.param(
        "maximize",
        1,
        [(F, None, DEAD), (F, None, {"retry_of": 0}), (P, 0.3, {"retry_of": 0}), (C, 0.2, {})],
        {0},
        id="twice-dead-then-pruned",
    ),
]


@pytest.mark.parametrize(("direction", "keep", "rows", "removed"), CASES)
def test_checkpoints_to_remove(direction, keep, rows, removed):
    study = _study(direction, rows)
    trials = study.get_trials(states=(C, P, F))
    assert checkpoints_to_remove(study, trials, keep) == removed


def test_running_and_waiting_trials_are_never_touched():
    study = _study("minimize", [(C, 0.5, {}), (C, 0.1, {})])
    study.ask()  # running
    study.enqueue_trial({})  # waiting
    trials = study.get_trials(states=(C, P, F))
    assert checkpoints_to_remove(study, trials, 0) == {0, 1}


def test_cleanup_removes_only_those_files(tmp_path, monkeypatch):
    monkeypatch.setattr(trial_module, "_REMOVED", {})
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(storage=url, study_name="clean")
    rows = [(C, 0.5, {}), (C, 0.1, {}), (P, 0.9, {}), (F, None, DEAD), (F, None, CRASH)]
    for state, value, attrs in rows:
        study.add_trial(
            create_trial(state=state, value=value if state == C else None, user_attrs=attrs)
        )
    cfg = SearchConfig(
        identity=StudyIdentity(study_name="clean", storage=url),
        budget=Budget(epochs=1, n_trials=5),
        durability=Durability(keep_checkpoints=1, runs_dir=str(tmp_path / "runs")),
    )
    for n in range(5):
        (trial_dir(cfg, n)).mkdir(parents=True)
        (trial_dir(cfg, n) / "last.pt").write_bytes(b"x")
    cleanup_checkpoints(study, cfg)
    left = sorted(n for n in range(5) if (trial_dir(cfg, n) / "last.pt").exists())
    assert left == [1, 3]
