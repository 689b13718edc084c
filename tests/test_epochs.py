"""EPOCHS: arguments that follow the run's epoch count, from a trial to the final run."""

import math
import pickle

import optuna
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import nn
from torch.optim import SGD, Adam
from torch.optim.lr_scheduler import CosineAnnealingLR, MultiStepLR

from hpo_trainer import EPOCHS, ConfigError, Hyperparameters, Trainer

pytestmark = pytest.mark.fast

LR, ETA_MIN = 0.1, 0.001


class Tiny(nn.Module):
    def __init__(self, hidden=8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, x):
        return self.net(x)


def _trainer(tmp_path, scheduler_args=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g)
    y = (x[:, 0] > 0).long()
    tr = Trainer((x[:32], y[:32]), (x[32:], y[32:]), batch_size=16, runs_dir=tmp_path, seed=0)
    tr.quiet = True
    tr.set_model(Tiny)
    tr.set_criterion(nn.CrossEntropyLoss)
    tr.set_optimizer(SGD)
    tr.prime_optimizer(lr=LR)
    tr.set_scheduler(CosineAnnealingLR)
    if scheduler_args is None:
        scheduler_args = {"T_max": EPOCHS, "eta_min": ETA_MIN}
    tr.prime_scheduler(**scheduler_args)
    return tr


@pytest.mark.parametrize("epochs", [3, 7])
def test_cosine_t_max_follows_the_run_and_ends_at_its_minimum(tmp_path, epochs):
    tr = _trainer(tmp_path)
    run = tr.build({}, epochs=epochs)
    assert run.state.scheduler.T_max == epochs
    state = tr.fit(run, callbacks=[])
    lrs = state.history["train/lr"]  # after each epoch's scheduler step
    assert len(lrs) == epochs
    assert lrs[-1] == pytest.approx(ETA_MIN)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # never climbs back up


def test_a_fixed_t_max_climbs_back_up_in_a_longer_run(tmp_path):
    """The reported bug, for contrast: T_max=3 in a 7-epoch run ends far from the minimum."""
    tr = _trainer(tmp_path, {"T_max": 3, "eta_min": ETA_MIN})
    lrs = tr.fit(tr.build({}, epochs=7), callbacks=[]).history["train/lr"]
    assert lrs[2] == pytest.approx(ETA_MIN) and lrs[-1] > 10 * ETA_MIN


def test_arithmetic_and_lists_resolve_per_run(tmp_path):
    tr = _trainer(tmp_path)
    tr.set_scheduler(MultiStepLR)
    tr.prime_scheduler(milestones=[EPOCHS // 2, EPOCHS - 1], gamma=0.5)
    assert sorted(tr.build({}, epochs=8).state.scheduler.milestones) == [4, 7]
    assert sorted(tr.build({}, epochs=20).state.scheduler.milestones) == [10, 19]


def test_a_non_positive_or_fractional_value_is_a_clear_error(tmp_path):
    tr = _trainer(tmp_path, {"T_max": EPOCHS - 4})
    with pytest.raises(
        ConfigError,
        match=r"prime_scheduler\(T_max=...\) is EPOCHS - 4, which must be a positive integer, "
        r"but for a run of 4 epochs it is 0; train more epochs",
    ):
        tr.build({}, epochs=4)
    hyp = Hyperparameters("scheduler").set_value("T_max", EPOCHS * 0.5)
    tr = _trainer(tmp_path, {})
    tr.set_scheduler_hyperparameters(hyp)
    assert tr.build(tr.resolve_params(), epochs=6).state.scheduler.T_max == 3
    with pytest.raises(
        ConfigError, match=r"scheduler argument 'T_max' is EPOCHS \* 0.5.*3.5; use //"
    ):
        tr.build(tr.resolve_params(), epochs=7)
    with pytest.raises(ConfigError, match="scheduler argument 'T_max' is EPOCHS"):
        tr.train(epochs=7)  # refused before a run folder is written
    assert not any(tmp_path.iterdir())


def test_set_value_epochs_in_the_scheduler_space(tmp_path):
    tr = _trainer(tmp_path, {"eta_min": ETA_MIN})
    tr.set_scheduler_hyperparameters(Hyperparameters("scheduler").set_value("T_max", EPOCHS))
    for epochs in (3, 7):
        run = tr.build(tr.resolve_params(), epochs=epochs)
        assert run.state.scheduler.T_max == epochs
    history = tr.train(epochs=4)
    assert tr.scheduler.T_max == 4 and history["train/lr"][-1] == pytest.approx(ETA_MIN)
    # TensorBoard's hparams record the expression as written
    acc = EventAccumulator(str(tr.run_dir))
    acc.Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    )
    assert start.session_start_info.hparams["scheduler.T_max"].string_value == "EPOCHS"


def test_conditional_value_reaches_sgd_and_not_adam(tmp_path):
    tr = _trainer(tmp_path)
    tr.prime_optimizer()
    hyp = Hyperparameters()
    hyp.choose_class([SGD, Adam])
    hyp.set_value("lr", LR)
    hyp.set_value("momentum", 0.9, when={"class": SGD})
    tr.set_hyperparameters(hyp)
    tr.check()  # Adam takes no momentum: the condition keeps it from Adam
    built = {}
    for name in ("SGD", "Adam"):
        values = tr.resolve_params({"optimizer": {"class": name}})
        optimizer = tr.build(values, epochs=2).state.optimizer
        built[type(optimizer)] = optimizer.param_groups[0]
    assert built[SGD]["momentum"] == 0.9
    assert "momentum" not in built[Adam]
    # without the condition Adam would be given momentum: refused before training
    hyp.set_value("momentum", 0.9)
    with pytest.raises(ConfigError, match="'momentum' is not an argument of optimizer Adam"):
        tr.check()


def test_a_trainer_using_epochs_survives_pickling(tmp_path):
    tr = _trainer(tmp_path, {"T_max": EPOCHS * 2 - 1, "eta_min": ETA_MIN})
    tr.set_scheduler_hyperparameters(
        Hyperparameters("scheduler").add_categorical("last_epoch", [-1])
    )
    copy = pickle.loads(pickle.dumps(tr))
    assert copy.primed["scheduler"][1]["T_max"] == EPOCHS * 2 - 1
    run = copy.build(copy.resolve_params({"scheduler.last_epoch": -1}), epochs=5)
    assert run.state.scheduler.T_max == 9


def test_search_with_epochs_then_a_longer_final_run(tmp_path):
    tr = _trainer(tmp_path)
    hyp = Hyperparameters()
    hyp.add_float("lr", 0.01, 0.5, log=True)
    hyp.set_value("momentum", 0.9)
    tr.prime_optimizer()
    tr.set_hyperparameters(hyp)
    study = tr.hyp_opt(epochs=2, iters=2, n_workers=1, seed=0)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(set(t.params) == {"optimizer.lr"} for t in study.trials)
    assert tr.scheduler.T_max == 2  # the last trial's scheduler
    history = tr.train(epochs=5)
    assert tr.scheduler.T_max == 5
    assert history["train/lr"][-1] == pytest.approx(ETA_MIN)
    assert not math.isnan(history["val/loss"][-1])
