"""A digits study for tests, with knobs: slow epochs, and a hidden size that crashes."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "studies"))
from digits_mlp import Net, load_digits_split  # noqa: E402

from hpo_trainer import Hyperparameters, Trainer  # noqa: E402


class FlakyNet(Net):
    """The digits MLP; a hidden size of 13 raises, as a bug in user code would."""

    def __init__(self, input_size: int = 64, hidden_size: int = 16, target_length: int = 10):
        if hidden_size == 13:
            raise ValueError("hidden_size 13 is unlucky")
        super().__init__(input_size, hidden_size, target_length)


class SlowTrainer(Trainer):
    """Sleeps after each batch so that a test can kill a worker mid-trial; a learning rate
    above 1e6 diverges to an infinite loss at once. With ``die_once`` (a file path), the
    first process to train a batch creates that file and kills itself with SIGKILL, as
    the kernel's out-of-memory killer would; with ``die_always`` every process does."""

    delay = 0.0
    die_once: str | None = None
    die_always = False

    def pass_batch(self, batch):
        if self.die_always or (self.die_once and _first_to_create(self.die_once)):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.delay and self.model.training:
            time.sleep(self.delay)
        out = super().pass_batch(batch)
        if self.optimizer.param_groups[0]["lr"] > 1e6:
            out["loss"] = out["loss"] * float("inf")
        return out


def _first_to_create(path: str) -> bool:
    try:
        with open(path, "x"):
            return True
    except FileExistsError:
        return False


def make_trainer(
    delay: float = 0.0,
    crashy: bool = True,
    crash_all: bool = False,
    die_once: str | None = None,
    die_always: bool = False,
    **options,
) -> Trainer:
    splits = load_digits_split()
    options = {"batch_size": 128, "seed": 0, "name": "tunable", "quiet": True, **options}
    tr = SlowTrainer(splits["train"], splits["val"], splits["test"], **options)
    tr.delay, tr.die_once, tr.die_always = delay, die_once, die_always
    opt = Hyperparameters()
    opt.set_range("lr", -3, 8)
    opt.set_value("momentum", 0.9)
    tr.set_hyperparameters(opt)
    arch = Hyperparameters()
    sizes = [13] if crash_all else [13, 16, 32] if crashy else [16, 32]
    arch.add_categorical("hidden_size", sizes)
    tr.set_arch_hyperparameters(arch)
    tr.set_model(FlakyNet)
    tr.set_criterion(nn.CrossEntropyLoss)
    tr.set_optimizer(torch.optim.SGD)
    return tr
