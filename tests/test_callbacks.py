import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from hpo_trainer import EarlyStopping

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
