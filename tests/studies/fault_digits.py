"""A digits study for the fault matrix (``tests/test_fault_matrix.py``): slow batches, and
faults that a test switches on through ``make_trainer`` options (``-o NAME=VALUE``).

* ``delay``: seconds slept after each training batch, so that a trial lasts long enough to
  be killed in the middle of an epoch (sleeping costs no CPU on a busy machine).
* ``kill_tokens``: a folder of token files. A process training a trial with
  ``hidden_size == 32`` that gets halfway through the epoch after ``kill_after`` completed
  epochs takes a token (it removes one file); if it got one, it waits until another
  process is training (each notes ``busy-<pid>`` there), writes the time, its completed
  epochs and the epoch it resumed from to ``killed-<pid>.json`` and SIGKILLs itself, as
  the kernel's out-of-memory killer would. No token left, no kill: a retry trains on.
* ``nan_size``: trials with this hidden size have a NaN ``val/acc`` in every epoch (a
  metric with a bug); their losses stay finite.
* ``data``: a file of the digits splits saved with ``torch.save`` (a dict of ``(x, y)``
  per split), so that a worker does not import scikit-learn to load them (a second of
  start-up per process).
* ``broken_workers``: the worker indexes (a list, or ``"all"``) whose ``make_trainer``
  raises in a spawned worker process (named ``worker-N``); the command that starts them
  builds its trainer as usual. A worker that cannot start, as with a missing dependency.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "studies"))
from digits_mlp import Net, load_digits_split  # noqa: E402

from hpo_trainer import Hyperparameters, Trainer  # noqa: E402
from hpo_trainer.train.callback import Callback  # noqa: E402
from hpo_trainer.train.state import FitState, Run  # noqa: E402

#: The hidden size of the trials that ``kill_tokens`` may kill.
MORTAL = 32
#: The other sizes of the space; the test enqueues the trials it needs.
SIZES = [16, 24, MORTAL]


class FaultyTrainer(Trainer):
    """The digits MLP trainer with the faults of the module docs."""

    delay = 0.0
    kill_tokens: str | None = None
    kill_after = 1
    nan_size: int | None = None
    started_at = 0

    def fit(self, run: Run, callbacks: Sequence[Callback]) -> FitState:
        """Train ``run``, noting the epoch it starts from (a retry resumes from its checkpoint)."""
        self.started_at = run.state.epoch
        return super().fit(run, callbacks)

    def pass_batch(self, batch: Any) -> dict[str, Any]:
        """Run the batch, then apply the faults switched on (see the module docs)."""
        state = self.last_run.state
        hidden = state.params.get("model", {}).get("hidden_size")
        if self.kill_tokens and self.model.training:
            folder = Path(self.kill_tokens)
            (folder / f"busy-{os.getpid()}").touch()
            if (
                hidden == MORTAL
                and state.epoch == self.kill_after
                and state.batch >= state.batches // 2
                and _take_token(folder)
            ):
                _die(folder, {"epochs": state.epoch, "resumed_from": self.started_at})
        if self.delay and self.model.training:
            time.sleep(self.delay)
        out = super().pass_batch(batch)
        if self.nan_size is not None and hidden == self.nan_size:
            out["acc"] = torch.tensor(float("nan"))  # replaces the epoch's val/acc
        return out


class PlainSGD:
    """SGD with momentum, without ``torch.optim.Optimizer``: building the first one of those
    imports ``torch._dynamo``, about 2 s of every worker's start-up, and this matrix starts
    36 workers. It keeps what the loop and checkpoints use: ``param_groups``, ``zero_grad``,
    ``step``, ``state_dict`` and ``load_state_dict``.

    Args:
        params: The model's parameters.
        lr: The learning rate.
        momentum: The momentum factor.

    """

    def __init__(self, params: Any, lr: float, momentum: float = 0.0) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"lr": lr, "momentum": momentum}]
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """Move each parameter against its gradient (with momentum)."""
        group = self.param_groups[0]
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            buf = self.buffers[i]
            buf = p.grad.clone() if buf is None else buf.mul_(group["momentum"]).add_(p.grad)
            self.buffers[i] = buf
            p.add_(buf, alpha=-group["lr"])

    def state_dict(self) -> dict[str, Any]:
        """The learning rate, momentum and momentum buffers."""
        return {"param_groups": [dict(g) for g in self.param_groups], "buffers": self.buffers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.param_groups = [dict(g) for g in state["param_groups"]]
        self.buffers = list(state["buffers"])


def _take_token(folder: Path) -> bool:
    """Remove one token file of ``folder``; return whether this process got one."""
    for token in sorted(folder.glob("token-*")):
        try:
            token.unlink()
            return True
        except FileNotFoundError:  # another process took it first
            continue
    return False


def _die(folder: Path, record: dict[str, Any]) -> None:
    """SIGKILL this process once another process is training (its ``busy-<pid>`` file), so
    that it dies while another worker runs; add when and who to ``record`` and write it."""
    deadline = time.monotonic() + 60
    others = []
    while not others and time.monotonic() < deadline:
        others = [p for p in folder.glob("busy-*") if p.name != f"busy-{os.getpid()}"]
        time.sleep(0.02)
    record = {**record, "time": time.time(), "pid": os.getpid()}
    (folder / f"killed-{os.getpid()}.json").write_text(json.dumps(record))
    os.kill(os.getpid(), signal.SIGKILL)


def _broken(workers: list[int] | str | None) -> bool:
    name = multiprocessing.current_process().name
    if workers is None or not name.startswith("worker-"):
        return False
    return workers == "all" or int(name.rpartition("-")[2]) in workers


def make_trainer(
    delay: float = 0.0,
    kill_tokens: str | None = None,
    kill_after: int = 1,
    nan_size: int | None = None,
    broken_workers: list[int] | str | None = None,
    data: str | None = None,
    **options: Any,
) -> Trainer:
    """Build the trainer (see the module docs for the fault options)."""
    if _broken(broken_workers):
        raise RuntimeError(f"{multiprocessing.current_process().name} cannot load its model")
    splits = torch.load(data, weights_only=True) if data else load_digits_split()
    options = {"batch_size": 128, "seed": 0, "name": "faults", "quiet": True, **options}
    tr = FaultyTrainer(splits["train"], splits["val"], splits["test"], **options)
    tr.delay, tr.kill_tokens, tr.kill_after, tr.nan_size = delay, kill_tokens, kill_after, nan_size
    opt = Hyperparameters()
    opt.set_range("lr", -2, -1)
    opt.set_value("momentum", 0.9)
    tr.set_hyperparameters(opt)
    arch = Hyperparameters()
    arch.add_categorical("hidden_size", SIZES)
    tr.set_arch_hyperparameters(arch)
    tr.set_model(Net)
    tr.prime_model(input_size=64, target_length=10)
    tr.set_criterion(nn.CrossEntropyLoss)
    tr.set_optimizer(PlainSGD)
    return tr
