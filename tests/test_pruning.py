"""Pruning decisions: :class:`FastReporter` decides exactly what ``trial.should_prune()`` does.

Each case runs the same seeded history twice, step by step, on two twin studies with the
same name and pruner (built by ``make_pruner``, as a search builds it): one asks through a
``FastReporter``, the other through Optuna's ``trial.should_prune()``. The decision must be
the same at every step of every trial. Twins rather than one study, because the
storage-backed pruners (successive halving, Hyperband) write rung attributes when asked, so
asking twice in one study would change the second answer.
"""

from __future__ import annotations

import math
import random

import optuna
import pytest
import torch
from optuna.trial import TrialState

from hpo_trainer.base.errors import NonFiniteError
from hpo_trainer.search.heartbeat import Requeue
from hpo_trainer.search.pruning import FastReporter, PruningCallback
from hpo_trainer.search.strategies import PRUNERS, SAMPLERS, make_pruner, make_sampler
from hpo_trainer.space import Hyperparameters
from hpo_trainer.train.state import FitState

pytestmark = pytest.mark.fast

EPOCHS = 8


def _curves(seed: int, n: int) -> list[list[float]]:
    """``n`` noisy, mostly falling loss curves of ``EPOCHS`` steps: good, bad and in between."""
    rng = random.Random(seed)
    curves = []
    for _ in range(n):
        start, floor = rng.uniform(0.8, 2.5), rng.uniform(0.05, 0.8)
        rate = rng.uniform(0.1, 0.9)
        curve = [
            floor + (start - floor) * math.exp(-rate * step) + rng.gauss(0, 0.05)
            for step in range(EPOCHS)
        ]
        if rng.random() < 0.15:  # a plateau: the patient pruner's case
            curve[3:] = [curve[3]] * (EPOCHS - 3)
        curves.append(curve)
    return curves


def _twins(pruner: str, name: str, storages=(None, None)):
    return [
        optuna.create_study(
            study_name=name,
            storage=storage,
            pruner=make_pruner(pruner, epochs=EPOCHS),
            sampler=optuna.samplers.RandomSampler(seed=0),
        )
        for storage in storages
    ]


def _run_lockstep(fast_study, slow_study, curves, *, stop_when_pruned):
    """Run each curve as a trial in both studies; return the decisions, asserting they agree."""
    decisions = []
    for number, curve in enumerate(curves):
        fast_trial, slow_trial = fast_study.ask(), slow_study.ask()
        assert fast_trial.number == slow_trial.number
        reporter = FastReporter(fast_study, fast_trial)
        pruned = False
        start = max(
            fast_study._storage.get_trial(fast_trial._trial_id).intermediate_values, default=-1
        )
        for step, value in enumerate(curve):
            if step <= start:
                continue  # a retry: its first attempt's epochs are already there
            reporter.report(value, step)
            slow_trial.report(value, step)
            fast, slow = reporter.should_prune(), slow_trial.should_prune()
            assert fast == slow, f"trial {number} step {step}: fast {fast}, should_prune {slow}"
            decisions.append(fast)
            pruned = pruned or fast
            if fast and stop_when_pruned:
                break
        for study, trial in ((fast_study, fast_trial), (slow_study, slow_trial)):
            if pruned:
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, curve[-1])
    assert [t.state for t in fast_study.trials] == [t.state for t in slow_study.trials]
    return decisions


#: (pruner, whether it ever prunes on these histories)
CASES = [
    ("median", True),
    ("median-warm", True),
    ("percentile", True),
    ("patient", True),
    ("halving", True),
    ("halving-warm", True),
    ("hyperband", True),
    ("none", False),
]


def test_the_cases_cover_every_pruner_by_name():
    assert sorted(name for name, _ in CASES) == sorted(PRUNERS)


@pytest.mark.parametrize(("pruner", "prunes"), CASES)
@pytest.mark.parametrize("stop_when_pruned", [True, False], ids=["stop", "go-on"])
def test_fast_reporter_decides_as_should_prune(pruner, prunes, stop_when_pruned):
    decisions = []
    for seed in range(4):
        fast, slow = _twins(pruner, f"twin-{pruner}-{seed}")
        decisions += _run_lockstep(
            fast, slow, _curves(seed, 12), stop_when_pruned=stop_when_pruned
        )
    assert len(decisions) >= 4 * 12
    assert any(decisions) is prunes
    assert not all(decisions)


@pytest.mark.parametrize("pruner", ["median", "halving"])
def test_fast_reporter_decides_as_should_prune_on_a_sqlite_file(tmp_path, pruner):
    urls = [f"sqlite:///{tmp_path}/fast.db", f"sqlite:///{tmp_path}/slow.db"]
    fast, slow = _twins(pruner, "on-disk", urls)
    decisions = _run_lockstep(fast, slow, _curves(7, 10), stop_when_pruned=True)
    assert any(decisions) and not all(decisions)


@pytest.mark.parametrize("pruner", ["median", "percentile", "patient", "halving", "hyperband"])
def test_a_retry_is_judged_with_its_first_attempts_epochs(pruner):
    """A re-queued trial carries its first attempt's values; both paths judge it with them."""
    fast, slow = _twins(pruner, f"retry-{pruner}")
    curves = _curves(3, 9)
    _run_lockstep(fast, slow, curves[:6], stop_when_pruned=True)
    for study in (fast, slow):
        first = study.ask()
        for step, value in enumerate(curves[6][:3]):
            first.report(value, step)
        study.tell(first, state=TrialState.FAIL)
        Requeue()(study, study.trials[-1])
    # the lockstep asks for the WAITING retry first, then two new trials
    decisions = _run_lockstep(fast, slow, curves[6:], stop_when_pruned=False)
    assert len(decisions) == (EPOCHS - 3) + 2 * EPOCHS
    retry = fast.trials[7]
    assert retry.system_attrs["failed_trial"] == 6
    assert retry.intermediate_values == dict(enumerate(curves[6]))


def test_the_fast_path_never_asks_the_storage_backed_should_prune(monkeypatch):
    fast, slow = _twins("median", "fast-path")
    _run_lockstep(fast, slow, _curves(1, 5), stop_when_pruned=False)
    fast_trial, slow_trial = fast.ask(), slow.ask()
    reporter = FastReporter(fast, fast_trial)

    def refuse(self):
        raise AssertionError("the median pruner's decision went through trial.should_prune")

    monkeypatch.setattr(optuna.trial.Trial, "should_prune", refuse)
    decisions, expected = [], []
    for step, value in enumerate([3.0] * EPOCHS):  # worse than every trial before it
        reporter.report(value, step)
        slow_trial.report(value, step)
        decisions.append(reporter.should_prune())
        # what should_prune would have answered: the pruner's decision on the stored trial
        expected.append(slow.pruner.prune(slow, slow.trials[-1]))
    assert decisions == expected and all(decisions), (decisions, expected)


def test_completed_trials_are_read_again_after_ttl():
    fast, slow = _twins("median", "ttl")
    curves = _curves(5, 6)
    _run_lockstep(fast, slow, curves[:3], stop_when_pruned=False)
    fast_trial, slow_trial = fast.ask(), slow.ask()
    reporter = FastReporter(fast, fast_trial, ttl=0.0)
    for step, value in enumerate(curves[3]):
        # other workers complete trials while this one runs
        if step in (2, 5):
            for study in (fast, slow):
                study.add_trial(
                    optuna.trial.create_trial(
                        value=0.01,
                        intermediate_values={s: 0.01 for s in range(EPOCHS)},
                    )
                )
        reporter.report(value, step)
        slow_trial.report(value, step)
        assert reporter.should_prune() == slow_trial.should_prune(), step


def _state(epoch: int, loss: float) -> FitState:
    model = torch.nn.Linear(2, 1)
    state = FitState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    state.epoch, state.metrics = epoch, {"val/loss": loss}
    return state


def test_pruning_callback_reports_every_epoch_and_raises_when_told():
    study = optuna.create_study(pruner=make_pruner("median", epochs=EPOCHS))
    for _ in range(3):
        study.add_trial(
            optuna.trial.create_trial(
                value=0.1, intermediate_values={s: 0.1 for s in range(1, EPOCHS + 1)}
            )
        )
    trial = study.ask()
    callback = PruningCallback(FastReporter(study, trial), "val/loss")
    state = _state(1, 5.0)
    with pytest.raises(optuna.TrialPruned, match=r"pruned after epoch 1 \(val/loss=5\)"):
        callback.on_epoch_end(state)
    assert state.stop_reason == "pruned after epoch 1 (val/loss=5)"
    assert study._storage.get_trial(trial._trial_id).intermediate_values == {1: 5.0}


@pytest.mark.parametrize(
    ("conditional", "n_trials", "chosen"),
    [(False, 40, optuna.samplers.GPSampler), (True, 40, optuna.samplers.TPESampler),
     (False, 500, optuna.samplers.TPESampler)],
)  # fmt: skip
def test_the_auto_sampler_chooses_by_space_and_budget(conditional, n_trials, chosen):
    from torch.optim import SGD, Adam

    from hpo_trainer.search.strategies import make_sampler
    from hpo_trainer.space import Hyperparameters

    hyp = Hyperparameters().choose_class([SGD, Adam]).add_float("lr", 1e-4, 1e-1, log=True)
    if conditional:
        hyp.add_float("momentum", 0.0, 0.99, when={"class": SGD})
    sampler = make_sampler("auto", seed=0, spaces={"optimizer": hyp}, n_trials=n_trials)
    assert type(sampler) is chosen


#: The sampler each name builds, as ``make_sampler`` documents it (``auto``: GP for a small
#: budget without conditional parameters).
SAMPLER_CLASSES = {
    "tpe": optuna.samplers.TPESampler,
    "tpe-independent": optuna.samplers.TPESampler,
    "gp": optuna.samplers.GPSampler,
    "auto": optuna.samplers.GPSampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "grid": optuna.samplers.GridSampler,
}


def _proposals(name: str, hyp, seed: int) -> list[tuple[int, float]]:
    """Ask and tell 3 trials of a fresh study driven by sampler ``name``; return what it drew."""
    sampler = make_sampler(name, seed=seed, spaces={"model": hyp}, n_trials=10)
    assert type(sampler) is SAMPLER_CLASSES[name], name
    study = optuna.create_study(sampler=sampler)
    drawn = []
    for _ in range(3):
        trial = study.ask()
        values = hyp.suggest(trial, prefix="model.")
        drawn.append((values["width"], values["dropout"]))
        study.tell(trial, (values["width"] - 40) ** 2 + values["dropout"])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3, name
    return drawn


@pytest.mark.parametrize("name", sorted(SAMPLER_CLASSES))
def test_every_sampler_name_proposes_values_inside_the_space(name):
    assert set(SAMPLER_CLASSES) == set(SAMPLERS)
    hyp = Hyperparameters().add_int("width", 8, 64).add_float("dropout", 0.0, 0.5, step=0.1)
    drawn = _proposals(name, hyp, seed=0)
    grid = [round(0.1 * k, 10) for k in range(6)]
    for width, dropout in drawn:
        assert isinstance(width, int) and 8 <= width <= 64, (name, width)
        assert any(math.isclose(dropout, g, abs_tol=1e-9) for g in grid), (name, dropout)
    if name == "grid":  # the grid never proposes a point twice
        assert len(set(drawn)) == 3
    # Seeded: the same name and seed propose the same values.
    assert _proposals(name, hyp, seed=0) == drawn


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_monitored_metric_stops_the_trial_unreported(value):
    # The training loop checks only the losses: a search judged by val/acc relies on this.
    study = optuna.create_study(pruner=make_pruner("none", epochs=EPOCHS))
    trial = study.ask()
    callback = PruningCallback(FastReporter(study, trial), "val/acc")
    state = _state(1, 0.5)
    state.metrics["val/acc"] = 0.8
    callback.on_epoch_end(state)
    state.epoch, state.metrics = 2, {"val/loss": 0.4, "val/acc": value}
    with pytest.raises(NonFiniteError, match=rf"^val/acc={value} in epoch 2; .*lower") as info:
        callback.on_epoch_end(state)
    assert info.value.metric == "val/acc"
    assert state.stop_reason == f"val/acc={value} in epoch 2"
    # epoch 1 was reported; the non-finite epoch 2 never reaches the pruner or the storage
    assert study._storage.get_trial(trial._trial_id).intermediate_values == {1: 0.8}
