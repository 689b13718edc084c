"""The benchmarks' study file: an MLP on synthetic data, only ``lr`` searched, so trials cost
alike; ``wide``: compute-bound trials, ``tiny``: storage and the worker loop dominate. With
``barrier``, a spawned worker pays its one-off costs, then waits for ``parties`` workers.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import SGD

from hpo_trainer import Hyperparameters, Trainer

SIZES = {  # in, hidden layers, classes, training examples, lr exponents
    "wide": (64, (384, 384), 10, 3072, (-3, -1.5)),
    "tiny": (16, (32,), 4, 512, (-3, -1)),
}


class MLP(nn.Module):
    """``in_dim -> hidden... -> classes`` with ReLU."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in zip((in_dim, *hidden), hidden):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden[-1], classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits."""
        return self.net(x)


def pay_one_off_costs() -> None:
    """Import what a process's first trial would (the first optimizer imports dynamo)."""
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401

    SGD(nn.Linear(2, 2).parameters(), lr=0.1)


def make_trainer(
    *, size: str = "wide", n_train: int = 0, barrier: str = "", parties: int = 0, **options: Any
) -> Trainer:
    """Build the trainer; ``n_train`` overrides the size's training examples, ``options``
    override Trainer keywords (``runs_dir``, ...)."""
    in_dim, hidden, classes, examples, (low, high) = SIZES[size]
    n_train = n_train or examples
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_train // 4, in_dim, generator=gen)
    logits = x @ torch.randn(in_dim, classes, generator=gen)
    if size == "wide":  # labels with noise: not perfectly separable
        logits += 0.5 * torch.randn(len(x), classes, generator=gen)
    y = logits.argmax(dim=1)
    kwargs = {"batch_size": 64, "seed": 0, "name": f"bench_{size}", "device": "cpu", **options}
    tr = Trainer((x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), **kwargs)
    hyp = Hyperparameters()
    hyp.register(["lr", "momentum"])
    hyp.set_range("lr", low, high)
    hyp.set_value("momentum", 0.9)
    tr.set_hyperparameters(hyp)
    tr.set_model(MLP)
    tr.prime_model(in_dim, hidden, classes)
    tr.set_criterion(nn.CrossEntropyLoss)
    tr.set_optimizer(SGD)
    if barrier and multiprocessing.parent_process() is not None:
        pay_one_off_costs()
        Path(barrier).mkdir(parents=True, exist_ok=True)
        (Path(barrier) / f"{os.getpid()}.ready").touch()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(Path(barrier).glob("*.ready"))) < parties:
            time.sleep(0.02)
    return tr
