import os
import pathlib

import pytest
import torch

from hpo_trainer import CheckpointError
from hpo_trainer.train import checkpoint

pytestmark = pytest.mark.fast


def test_round_trip_with_recorded_size_and_checksum(tmp_path):
    path = checkpoint.save(
        {"w": torch.arange(4), "epoch": 3, "params": {"lr": 0.1}}, tmp_path / "c.pt"
    )
    meta = path.with_name("c.pt.meta.json")
    assert meta.exists() and '"sha256"' in meta.read_text()
    loaded = checkpoint.load(path)
    assert loaded["epoch"] == 3 and torch.equal(loaded["w"], torch.arange(4))


def test_truncated_or_corrupted_checkpoint_is_detected(tmp_path):
    path = checkpoint.save({"w": torch.zeros(100)}, tmp_path / "c.pt")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        checkpoint.load(path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": pathlib.PurePosixPath("x")}, path)  # not a tensor or plain value
    with pytest.raises(
        CheckpointError, match="holds pickled Python objects, which are never loaded"
    ):
        checkpoint.load(path)


def test_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = checkpoint.save({"epoch": 1}, tmp_path / "c.pt")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save({"epoch": 2}, path)
    monkeypatch.undo()
    assert checkpoint.load(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_load_latest_falls_back_to_the_previous_good_one(tmp_path):
    a = checkpoint.save({"epoch": 1}, tmp_path / "epoch-0001.pt")
    b = checkpoint.save({"epoch": 2}, tmp_path / "epoch-0002.pt")
    b.write_bytes(b.read_bytes()[:10])
    assert checkpoint.load_latest([a, b])["epoch"] == 1


def test_capture_saves_callback_states_and_fit_hands_them_back(tmp_path):
    from torch import nn

    from hpo_trainer import EarlyStopping, FitState
    from hpo_trainer.train.loop import fit

    model = nn.Linear(2, 2)
    state = FitState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    stopper = EarlyStopping(patience=4)
    stopper.best, stopper.bad_epochs = 0.75, 3
    state.callbacks = [stopper]
    state.epoch = 2
    path = checkpoint.save(checkpoint.capture(state), tmp_path / "c.pt")
    ckpt = checkpoint.load(path)
    assert ckpt["callbacks"] == {"EarlyStopping:0": {"best": 0.75, "bad_epochs": 3}}

    fresh = FitState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    checkpoint.restore(fresh, ckpt)
    assert fresh.epoch == 2 and fresh.callback_states == ckpt["callbacks"]
    resumed = EarlyStopping(patience=4)
    fresh.epochs = 2  # nothing left to train: fit only starts and ends
    fit(fresh, train_batches=[], pass_batch=lambda b: b, callbacks=[resumed])
    assert (resumed.best, resumed.bad_epochs) == (0.75, 3)
    assert fresh.callback_states == {}


def test_a_snapshot_keeps_this_epochs_values_while_training_changes_the_live_ones():
    import collections

    import numpy as np
    import torch

    model = torch.nn.Linear(3, 2)
    Pair = collections.namedtuple("Pair", "a b")
    live = {
        "model": model.state_dict(),
        "rng": ("MT19937", np.arange(4), Pair(torch.ones(2), 1.5)),
        "history": {"val/loss": [0.5]},
        "params": {"class": torch.optim.SGD},
    }
    snap = checkpoint.snapshot(live)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)  # an optimizer step, in place
    live["rng"][1][0] = 99
    live["history"]["val/loss"].append(0.4)
    assert torch.equal(snap["model"]["weight"], before)
    assert snap["model"]["weight"].device.type == "cpu"
    assert snap["rng"][1].tolist() == [0, 1, 2, 3] and isinstance(snap["rng"][2], Pair)
    assert snap["history"] == {"val/loss": [0.5]} and snap["params"]["class"] is torch.optim.SGD
