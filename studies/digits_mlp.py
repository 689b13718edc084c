"""The template's example made real: an MLP on scikit-learn's digits, SGD with a searched lr.

1,797 8x8 images of handwritten digits, split 60/20/20 into train/val/test with a fixed
seed. The search space is the template's: ``lr`` log-uniform in 1e-5 .. 1e-1 (given as the
exponents -5 and -1), momentum fixed at 0.9, plus the hidden layer's width.

Run it:
    hpo-trainer search studies/digits_mlp.py --workers 2
    hpo-trainer export --out best.json
    hpo-trainer train studies/digits_mlp.py --params best.json
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import SGD
from torch.optim.lr_scheduler import StepLR

from hpo_trainer import Hyperparameters, Trainer

#: Defaults for ``hpo-trainer search`` on this file.
SEARCH = {"epochs": 20, "n_trials": 40}
#: Defaults for ``hpo-trainer train`` on this file.
TRAIN = {"epochs": 30, "save_every": 5}


class Net(nn.Module):
    """The template's network: one hidden layer with ReLU."""

    def __init__(self, input_size: int = 2, hidden_size: int = 1, target_length: int = 1):
        super().__init__()
        self.h = nn.Linear(input_size, hidden_size)
        self.o = nn.Linear(hidden_size, target_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o(F.relu(self.h(x)))


def load_digits_split(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return the digits as float32 inputs in [0, 1] and int64 labels, split 60/20/20."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_train, n_val = int(0.6 * len(x)), int(0.2 * len(x))
    parts = {
        "train": perm[:n_train],
        "val": perm[n_train : n_train + n_val],
        "test": perm[n_train + n_val :],
    }
    return {name: (x[idx], y[idx]) for name, idx in parts.items()}


def make_trainer(**options: object) -> Trainer:
    """Build the configured trainer; ``options`` override Trainer keywords (e.g. runs_dir)."""
    splits = load_digits_split()
    kwargs = {"batch_size": 64, "seed": 0, "name": "digits_mlp", **options}
    tr = Trainer(splits["train"], splits["val"], splits["test"], **kwargs)

    optim_params = Hyperparameters()
    optim_params.register(["lr", "momentum"])
    optim_params.set_range("lr", -5, -1)
    optim_params.set_value("momentum", 0.9)
    tr.set_hyperparameters(optim_params)

    arch = Hyperparameters()
    arch.add_categorical("hidden_size", [16, 32, 64, 128])
    tr.set_arch_hyperparameters(arch)

    tr.set_model(Net)
    tr.set_criterion(nn.CrossEntropyLoss)
    tr.set_optimizer(SGD)
    tr.set_scheduler(StepLR)
    tr.prime_optimizer()
    tr.prime_scheduler(10, gamma=0.5)
    tr.prime_model(input_size=64, target_length=10)
    return tr
