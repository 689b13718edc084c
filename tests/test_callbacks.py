import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import nn
from torch.optim import SGD

from hpo_trainer import Callback, ConfigError, EarlyStopping, TensorBoardCallback, Trainer
from hpo_trainer.train import checkpoint
from hpo_trainer.train.callback import callback_states, load_callback_states

pytestmark = pytest.mark.fast

GOOD = {"optimizer.lr": 0.05, "model.hidden_size": 64}


def _events(run_dir):
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return acc


def test_tensorboard_scalars_every_update_and_hparams_readable(make_trainer):
    tr = make_trainer()
    tr.train(epochs=4, update_every=2, params=GOOD)
    acc = _events(tr.run_dir)
    tags = acc.Tags()["scalars"]
    for tag in ("train/loss", "val/loss", "val/acc", "test/acc", "train/lr"):
        assert tag in tags
    assert [e.step for e in acc.Scalars("val/loss")] == [2, 4]
    assert acc.Scalars("val/loss")[-1].value == pytest.approx(tr.history["val/loss"][-1])
    hp = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hp
    start = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/session_start_info"])
    params = start.session_start_info.hparams
    assert params["optimizer.lr"].number_value == 0.05
    assert params["model.hidden_size"].number_value == 64
    assert params["optimizer.momentum"].number_value == 0.9
    exp = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/experiment"])
    assert "val/loss" in {m.name.tag for m in exp.experiment.metric_infos}


def test_early_stopping_stops_and_says_why(make_trainer):
    tr = make_trainer()
    stopper = EarlyStopping("val/loss", patience=1, min_delta=10.0)
    history = tr.train(epochs=10, params=GOOD, callbacks=[stopper])
    assert len(history["val/loss"]) == 2
    # the run's final checkpoint is written at the early stop
    assert (tr.run_dir / "checkpoints" / "epoch-0002.pt").exists()


# -- callback state across a resume ------------------------------------------------------


class _StopMidEpoch(Callback):
    """Stop the run part-way through epoch ``epoch + 1``, as SIGINT / SIGTERM would."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, state):
        if state.epoch == self.epoch and state.batch == 2:
            state.interrupted = True


def _stopper():
    # On the digits study (StepLR too) val/loss last improves by 0.005 at epoch 14, so the
    # run stops after epoch 17; a stopper that forgot its count would run on.
    return EarlyStopping("val/loss", patience=3, min_delta=0.005)


def test_early_stopping_resumed_mid_run_stops_where_the_uninterrupted_run_stops(make_trainer):
    whole = make_trainer()
    whole_stopper = _stopper()
    full = whole.train(epochs=30, save_every=3, params=GOOD, callbacks=[whole_stopper])
    assert len(full["val/loss"]) == 17
    assert whole.last_run.state.stop_reason.startswith("early stop: val/loss")

    tr = make_trainer()
    tr.train(epochs=30, save_every=3, params=GOOD, callbacks=[_stopper(), _StopMidEpoch(16)])
    run_dir = tr.run_dir
    assert len(tr.history["val/loss"]) == 16
    saved = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
    # epoch 16 completed but was not due; the half of epoch 17 is never saved as epoch 16
    assert saved[-1] == "epoch-0015.pt" and "epoch-0016.pt" not in saved
    states = checkpoint.load(run_dir / "checkpoints" / "epoch-0015.pt")["callbacks"]
    assert states["EarlyStopping:0"] == {"best": full["val/loss"][13], "bad_epochs": 1}

    stopper = _stopper()
    resumed = make_trainer().train(epochs=30, save_every=3, resume=run_dir, callbacks=[stopper])
    assert dict(resumed) == dict(full)
    assert (stopper.best, stopper.bad_epochs) == (whole_stopper.best, whole_stopper.bad_epochs)
    assert (run_dir / "checkpoints" / "epoch-0017.pt").exists()

    # resuming the finished run again trains nothing: the stop is part of its state
    again = make_trainer().train(epochs=30, resume=run_dir, callbacks=[_stopper()])
    assert dict(again) == dict(full)


def test_callback_states_go_back_by_class_and_position(caplog):
    first, second = _stopper(), _stopper()
    first.best, first.bad_epochs = 0.5, 2
    second.best, second.bad_epochs = 0.25, 1
    states = callback_states([first, TensorBoardCallback("unused"), second])
    assert states["EarlyStopping:0"] == {"best": 0.5, "bad_epochs": 2}
    assert states["EarlyStopping:1"] == {"best": 0.25, "bad_epochs": 1}
    a, b = _stopper(), _stopper()
    load_callback_states([a, b], states)
    assert (a.best, a.bad_epochs, b.best, b.bad_epochs) == (0.5, 2, 0.25, 1)
    assert "TensorBoardCallback:0" in caplog.text and "not used" in caplog.text


def test_a_reused_early_stopping_starts_over_on_a_fresh_run(make_trainer):
    stopper = EarlyStopping("val/loss", patience=1, min_delta=10.0)
    tr = make_trainer()
    tr.train(epochs=10, params=GOOD, callbacks=[stopper])
    assert len(tr.train(epochs=10, params=GOOD, callbacks=[stopper])["val/loss"]) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "mx"}, "mode must be 'min' or 'max', got 'mx'"),
        ({"patience": 0}, "patience must be an integer >= 1, got 0"),
        ({"min_delta": -1.0}, "min_delta must be a number >= 0, got -1.0"),
    ],
)
def test_early_stopping_arguments_are_checked(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EarlyStopping(**kwargs)


def test_a_callback_state_that_a_safe_load_would_refuse_is_named():
    class Keeps(Callback):
        def state_dict(self):
            return {"seen": [1, {"when": object()}]}

    with pytest.raises(ConfigError, match=r"Keeps:0's state.*\['seen'\]\[1\]\['when'\]"):
        callback_states([Keeps()])


def test_checkpoints_written_in_the_background_equal_those_written_in_line(make_trainer, tmp_path):
    from hpo_trainer import CheckpointCallback

    saved = {}
    for background in (False, True):
        tr = make_trainer()
        run = tr.build(tr.resolve_params(GOOD), epochs=4, seed=0, with_test=False)
        folder = tmp_path / f"background-{background}"
        saver = CheckpointCallback(folder, background=background)
        tr.fit(run, [saver])
        assert saver._pending is None and saver._writer is None  # flushed at the fit's end
        saved[background] = [checkpoint.load(folder / f"epoch-{e:04d}.pt") for e in (1, 2, 3, 4)]
    for inline, behind in zip(saved[False], saved[True]):
        assert inline["epoch"] == behind["epoch"] and inline["history"] == behind["history"]
        for name, tensor in inline["model"].items():
            # each epoch's weights, not later ones: the writer saved a copy taken at the end
            assert torch.equal(tensor, behind["model"][name]), (inline["epoch"], name)
    assert not torch.equal(
        saved[True][0]["model"]["h.weight"], saved[True][3]["model"]["h.weight"]
    )


# -- what pass_batch returns: checked on the first batch ---------------------------------


class _Linear(nn.Module):
    """One output per example: (N, 3) in, (N, 1) out."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x):
        return self.fc(x)


def _regression(tmp_path, y_shape):
    """A trainer of y = x @ w on 256 examples, the targets shaped ``y_shape(y)``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=gen)
    y = y_shape(x @ torch.tensor([1.5, -2.0, 0.5]))
    tr = Trainer((x, y), (x, y), batch_size=16, runs_dir=tmp_path, quiet=True, seed=0)
    tr.set_model(_Linear)
    tr.set_criterion(nn.MSELoss)
    tr.set_optimizer(SGD)
    tr.prime_optimizer(lr=0.1)
    return tr


@pytest.mark.filterwarnings("ignore:Using a target size")  # PyTorch's own warning
def test_a_regression_target_that_broadcasts_against_the_outputs_is_refused(tmp_path):
    tr = _regression(tmp_path, lambda y: y)  # (N,) against outputs (N, 1)
    with pytest.raises(ConfigError) as err:
        tr.train(epochs=2)
    message = str(err.value)
    assert "outputs have shape (16, 1) but the targets have shape (16,)" in message
    assert "broadcasting them gives (16, 16)" in message
    assert "y.unsqueeze(1)" in message and "squeeze the model's output" in message


def test_a_regression_target_shaped_like_the_outputs_trains(tmp_path):
    tr = _regression(tmp_path, lambda y: y.unsqueeze(1))
    history = tr.train(epochs=5)
    # y is exactly linear in x: the fit recovers it (a broadcast loss would not)
    assert history["val/loss"][-1] < 1e-6 < history["val/loss"][0]
