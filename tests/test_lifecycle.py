"""A trial's lifecycle: its outcome is decided once (``trial.decide``) and written once.

The unit tests map what happened to one attempt (an ``Ending``) to what the study is told.
The searches check the two non-finite cases end to end, each on a metric that is NaN in
every epoch (a metric function with a bug): a non-finite *monitored* metric stops its trial
as a non-finite loss does, and a non-finite value found at the end is a failure that
``max_failures`` counts. Before, both were told FAIL without a failure record: never
counted, so a search on such a metric ran until its timeout.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from hpo_trainer import Hyperparameters
from hpo_trainer.base.errors import NonFiniteError, NonFiniteLossError
from hpo_trainer.facade.studyfile import load_trainer_from_file
from hpo_trainer.search import facts
from hpo_trainer.search.config import Budget, Goal, SearchConfig, StudyIdentity
from hpo_trainer.search.engine import search
from hpo_trainer.search.progress import snapshot
from hpo_trainer.search.trial import Ending, decide

HERE = Path(__file__).resolve().parent
TUNABLE = HERE / "studies" / "tunable_digits.py"
CFG = SearchConfig(
    identity=StudyIdentity(study_name="s", storage="sqlite://"),
    budget=Budget(epochs=3, n_trials=2),
)
MULTI = dataclasses.replace(
    CFG, goal=Goal(objectives=(("val/loss", "minimize"), ("val/acc", "maximize")))
)


def _raised(exc: Exception) -> Exception:
    """``exc`` as caught: with the traceback a real raise gives it."""
    try:
        raise exc
    except Exception as caught:
        return caught


@pytest.mark.parametrize(
    ("ending", "state", "key", "reason"),
    [
        pytest.param(
            Ending(2, 1.0, value=0.25, best_epoch=2),
            TrialState.COMPLETE,
            None,
            None,
            id="complete",
        ),
        pytest.param(
            Ending(1, 1.0, error=optuna.TrialPruned("pruned after epoch 1 (val/loss=3)")),
            TrialState.PRUNED,
            "pruned",
            "pruned after epoch 1 (val/loss=3)",
            id="pruned",
        ),
        pytest.param(
            Ending(0, 1.0, error=NonFiniteLossError("the loss became non-finite in epoch 1")),
            TrialState.PRUNED,
            "pruned",
            "non-finite loss: the loss became non-finite in epoch 1",
            id="non-finite-loss",
        ),
        pytest.param(
            Ending(2, 1.0, error=NonFiniteError("val/acc=nan in epoch 2", "val/acc")),
            TrialState.PRUNED,
            "pruned",
            "non-finite val/acc: val/acc=nan in epoch 2",
            id="non-finite-monitored-metric",
        ),
        pytest.param(
            Ending(1, 1.0, timed_out="time limit of 3 s reached in epoch 2"),
            TrialState.PRUNED,
            "pruned",
            "time limit of 3 s reached in epoch 2",
            id="timed-out",
        ),
        pytest.param(
            Ending(3, 1.0, value=math.nan, best_epoch=0),
            TrialState.FAIL,
            "failure",
            "non-finite value: val/loss=nan (no epoch of val/loss is finite)",
            id="no-finite-epoch",
        ),
        pytest.param(
            Ending(3, 1.0, value=-math.inf, best_epoch=2),
            TrialState.FAIL,
            "failure",
            "non-finite value: val/loss=-inf at its best epoch 2",
            id="infinite-value",
        ),
        pytest.param(
            Ending(2, 1.0, error=torch.OutOfMemoryError("CUDA out of memory.\nTried 2 GiB")),
            TrialState.FAIL,
            "failure",
            "out of memory: CUDA out of memory.",
            id="out-of-memory",
        ),
    ],
)
def test_what_happened_decides_the_state_and_its_reason(ending, state, key, reason):
    outcome = decide(CFG, ending)
    assert outcome.state == state and not outcome.requeue
    assert outcome.reason == reason
    if key is not None:
        assert outcome.attrs[key] == reason
    assert outcome.attrs["epochs"] == ending.epochs and outcome.attrs["wall_time"] == 1.0
    # Only a trial that completed is told a value; the others are told their state alone.
    assert outcome.value == (ending.value if state == TrialState.COMPLETE else None)


def test_a_crash_is_a_failure_with_its_traceback():
    outcome = decide(CFG, Ending(1, 0.5, error=_raised(ValueError("hidden_size 13"))))
    assert outcome.state == TrialState.FAIL
    assert outcome.attrs["failure"] == "ValueError: hidden_size 13"
    assert outcome.attrs["traceback"].startswith("Traceback (most recent call last)")
    assert "_raised" in outcome.attrs["traceback"]


def test_an_interrupted_trial_is_requeued_and_not_a_failure():
    outcome = decide(CFG, Ending(2, 9.0, interrupted=True))
    assert outcome.state == TrialState.FAIL and outcome.requeue
    assert outcome.attrs == {"epochs": 2, "interrupted": "stopped after epoch 2; re-queued"}
    # An error raised while stopping is what happened: the trial failed by itself.
    crashed = decide(CFG, Ending(2, 9.0, interrupted=True, error=_raised(OSError("disk"))))
    assert crashed.state == TrialState.FAIL and not crashed.requeue
    assert crashed.attrs["failure"] == "OSError: disk"


def test_a_multi_objective_value_names_each_non_finite_objective():
    outcome = decide(MULTI, Ending(3, 1.0, value=[0.5, math.nan], best_epoch=3))
    assert outcome.state == TrialState.FAIL
    assert outcome.attrs["failure"] == "non-finite value: val/acc=nan at its best epoch 3"
    assert decide(MULTI, Ending(3, 1.0, value=[0.5, 0.9], best_epoch=1)).value == [0.5, 0.9]


def test_a_non_finite_error_keeps_its_metric_across_processes():
    error = pickle.loads(pickle.dumps(NonFiniteError("val/f1=nan in epoch 1", "val/f1")))
    assert error.metric == "val/f1" and str(error) == "val/f1=nan in epoch 1"
    loss = pickle.loads(pickle.dumps(NonFiniteLossError("the loss became non-finite")))
    assert isinstance(loss, NonFiniteError) and loss.metric == "loss"


# -- searches on a metric that is NaN in every epoch ----------------------------------------


def _nan_metric_trainer(tmp_path: Path):
    """The tunable digits study with a tame learning rate (its losses stay finite) and a
    ``val/weird`` metric that is NaN in every epoch."""
    tr = load_trainer_from_file(TUNABLE, runs_dir=tmp_path / "runs", crashy=False)
    opt = Hyperparameters()
    opt.set_range("lr", -2, -1)
    opt.set_value("momentum", 0.9)
    tr.set_hyperparameters(opt)
    tr.add_metric("weird", lambda preds, target: math.nan)  # a metric function with a bug
    return tr


def _checkpoints(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "runs").glob("*/trial-*/last.pt"))


def test_a_nan_monitored_metric_stops_each_trial_and_the_search_reaches_its_budget(tmp_path):
    outcome = search(
        _nan_metric_trainer(tmp_path),
        epochs=3,
        n_trials=2,
        metric="val/weird",
        direction="maximize",
        pruner="none",  # nothing else would stop a trial judged by NaN
        seed=0,
        timeout=120,  # before the fix: no trial counted, the search ran until this
        storage=f"sqlite:///{tmp_path}/s.db",
    )
    assert outcome.stopped_by == "budget" and outcome.finished == 2
    trials = outcome.study.trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    for t in trials:
        assert t.user_attrs["pruned"].startswith("non-finite val/weird: val/weird=nan in epoch 1")
        assert t.intermediate_values == {}  # the NaN was never reported to the pruner
        assert t.user_attrs["epochs"] == 1
    assert _checkpoints(tmp_path) == []


def test_a_nan_value_at_the_end_is_a_counted_failure_and_leaves_no_checkpoint(tmp_path):
    outcome = search(
        _nan_metric_trainer(tmp_path),
        epochs=1,
        n_trials=3,
        # pruned on val/loss (finite); val/weird is read once, at the best epoch
        objectives=["val/loss:min", "val/weird:max"],
        max_failures=2,
        seed=0,
        timeout=120,  # before the fix: the failures were not counted
        storage=f"sqlite:///{tmp_path}/s.db",
    )
    assert outcome.stopped_by == "failures" and outcome.finished == 0
    trials = outcome.study.trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    assert len(facts.failures(trials)) == 2
    for t in trials:
        assert t.user_attrs["failure"] == "non-finite value: val/weird=nan at its best epoch 1"
        assert t.user_attrs["best_epoch"] == 1
    assert snapshot(outcome.study, 3).line() == (
        "0/3 trials finished (0 complete, 0 pruned, 2 failed)"
    )
    assert facts.summary(outcome.study)["states"] == {"FAIL": 2}
    assert _checkpoints(tmp_path) == []  # cleaned up like any failed trial's


@pytest.mark.parametrize(
    ("codes", "fix_first"),
    [([-9, -9], False), ([0, -15], False), ([1, 0], True), ([1, -9], True)],
)
def test_dead_workers_advice_says_whether_a_rerun_alone_will_do(tmp_path, codes, fix_first):
    """Killed workers' trials resume on a rerun; a worker that failed by itself (its
    make_trainer raised) fails again on a rerun unless the cause is fixed first."""
    from hpo_trainer.search.engine import _outcome

    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="dead", storage=url)
    cfg = SearchConfig(
        identity=StudyIdentity(study_name="dead", storage=url),
        budget=Budget(epochs=1, n_trials=3),
    )
    outcome = _outcome(study, cfg, codes, elapsed=1.0)
    assert outcome.stopped_by == "workers"
    assert "Run the same command again" in outcome.problem or "run the same command" in (
        outcome.problem
    )
    assert ("fix the cause" in outcome.problem) is fix_first, outcome.problem
    for i, code in enumerate(codes):
        if code:
            assert f"worker {i} " in outcome.problem
