"""The task families of the search-quality benchmark, as one study file.

Five small tasks that differ in kind, all from data that ships with scikit-learn or is
generated with a fixed seed, each split 60/20/20 into train/val/test:

==============  =================================================================  =========
family          data and model                                                     loss
==============  =================================================================  =========
``tabular``     scikit-learn's digits as 64 pixel columns (1,797 rows,             CE
                standardised), a two-layer MLP
``cnn``         digits written as PNG files and read through ``ImageFolder``,      CE
                a small CNN (slow to start: its first epochs say little)
``regression``  diabetes (442 x 10) with the raw target (25..346): losses range    MSE
                from ~30,000 (untrained or diverged) to ~3,000
``noisy``       an imbalanced (80/20), label-noisy (10% flipped) binary problem,   CE
                3,000 x 20
``lr_batch``    a 6-class problem (4,000 x 30) searched over batch sizes 8..512,   CE
                where the right learning rate moves with the batch size
==============  =================================================================  =========

Every family searches the same kinds of dimensions: the optimizer class (SGD or Adam) with
SGD's momentum only when SGD is chosen (a conditional), the hidden width (an integer on a
log scale), dropout, the learning rate (log) and the batch size (a choice).

``hpo-trainer search benchmarks/quality_tasks.py -o family=cnn`` searches one family.
``benchmarks/quality_baselines.py`` trains the same data and models with hand-written loops
(this module imports hpo-trainer only inside ``make_trainer``, so they do not pay for it).
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import SGD, Adam

if TYPE_CHECKING:
    from hpo_trainer import Trainer

SEARCH = {"epochs": 20, "n_trials": 40}
TRAIN = {"epochs": 20}
FAMILIES = ("tabular", "cnn", "regression", "noisy", "lr_batch")
Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Family:
    """What a family searches: the learning-rate range and the batch sizes."""

    lr: tuple[float, float]
    batch_sizes: tuple[int, ...]
    width: tuple[int, int] = (8, 256)
    regression: bool = False


SPECS = {
    "tabular": Family(lr=(1e-4, 1.0), batch_sizes=(16, 32, 64, 128)),
    "cnn": Family(lr=(1e-4, 0.3), batch_sizes=(16, 32, 64, 128), width=(4, 16)),
    "regression": Family(lr=(1e-5, 0.3), batch_sizes=(16, 32, 64), regression=True),
    "noisy": Family(lr=(1e-4, 1.0), batch_sizes=(32, 64, 128, 256)),
    "lr_batch": Family(lr=(1e-4, 1.0), batch_sizes=(8, 32, 128, 512)),
}


class MLP(nn.Module):
    """Two hidden layers of ``width`` units with ReLU and dropout."""

    def __init__(self, n_in: int, n_out: int, width: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out.squeeze(-1) if out.shape[-1] == 1 else out


class CNN(nn.Module):
    """Two 3x3 convolutions of ``width`` and ``2 * width`` maps, a pool, dropout, a linear head."""

    def __init__(self, n_in: int, n_out: int, width: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(n_in, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * width * 16, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _split(x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> Splits:
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_train, n_val = int(0.6 * len(x)), int(0.2 * len(x))
    idx = {
        "train": perm[:n_train],
        "val": perm[n_train : n_train + n_val],
        "test": perm[n_train + n_val :],
    }
    return {name: (x[i], y[i]) for name, i in idx.items()}


def _standardised(splits: Splits) -> Splits:
    mean, std = splits["train"][0].mean(0), splits["train"][0].std(0) + 1e-6
    return {name: ((x - mean) / std, y) for name, (x, y) in splits.items()}


def _tensors(x: Any, y: Any, regression: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.float32 if regression else torch.int64
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=dtype)


def _image_folder_splits() -> Splits:
    """Digits as PNG files (written once, as ``studies/digits_cnn_imagefolder.py`` does),
    read through ``ImageFolder`` and kept in memory as tensors."""
    import runpy

    from torchvision import datasets

    study = Path(__file__).resolve().parents[1] / "studies" / "digits_cnn_imagefolder.py"
    module = runpy.run_path(str(study))
    root = Path(os.environ.get("HPO_QUALITY_DATA", tempfile.gettempdir())) / "hpo_quality_png"
    module["write_digits_pngs"](root)
    out = {}
    for split in ("train", "val", "test"):
        folder = datasets.ImageFolder(str(root / split), transform=module["EVAL_TRANSFORM"])
        xs, ys = zip(*(folder[i] for i in range(len(folder))))
        out[split] = (torch.stack(xs), torch.tensor(ys, dtype=torch.int64))
    return out


@functools.cache
def load(family: str) -> Splits:
    """The family's train/val/test tensors (cached per process)."""
    from sklearn import datasets

    if family == "tabular":
        # (breast cancer was tried first: its validation loss reaches 0, which ranks nothing)
        return _standardised(_split(*_tensors(*datasets.load_digits(return_X_y=True))))
    if family == "cnn":
        return _image_folder_splits()
    if family == "regression":
        x, y = datasets.load_diabetes(return_X_y=True)
        return _standardised(_split(*_tensors(x, y, regression=True)))
    if family == "noisy":
        x, y = datasets.make_classification(
            n_samples=3000, n_features=20, n_informative=5, n_redundant=5, weights=[0.8],
            flip_y=0.1, class_sep=0.7, random_state=0,
        )  # fmt: skip
        return _standardised(_split(*_tensors(x, y)))
    if family == "lr_batch":
        x, y = datasets.make_classification(
            n_samples=4000, n_features=30, n_informative=12, n_classes=6,
            n_clusters_per_class=2, random_state=1,
        )  # fmt: skip
        return _standardised(_split(*_tensors(x, y)))
    raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")


def shape(family: str) -> tuple[type[nn.Module], int, int]:
    """The family's model class, its input size (features or channels) and output size."""
    (x, y) = load(family)["train"]
    if SPECS[family].regression:
        return MLP, x.shape[1], 1
    n_out = int(y.max()) + 1
    return (CNN, x.shape[1], n_out) if x.dim() == 4 else (MLP, x.shape[1], n_out)


def loss_class(family: str) -> type[nn.Module]:
    """MSE for the regression, cross-entropy for the rest."""
    return nn.MSELoss if SPECS[family].regression else nn.CrossEntropyLoss


def make_trainer(family: str = "tabular", **options: Any) -> Trainer:
    """The family as hpo-trainer searches it."""
    from hpo_trainer import ConfigError, Hyperparameters, Trainer

    if family not in SPECS:
        raise ConfigError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    spec, splits = SPECS[family], load(family)
    model, n_in, n_out = shape(family)
    kwargs = {"batch_size": spec.batch_sizes[0], "seed": 0, "name": f"quality_{family}"}
    tr = Trainer(splits["train"], splits["val"], splits["test"], **(kwargs | options))

    optim = Hyperparameters().choose_class([SGD, Adam])
    optim.add_float("lr", *spec.lr, log=True)
    optim.add_float("momentum", 0.0, 0.99, when={"class": SGD})
    tr.set_hyperparameters(optim)
    arch = Hyperparameters().add_int("width", *spec.width, log=True)
    arch.add_float("dropout", 0.0, 0.5)
    tr.set_arch_hyperparameters(arch)
    tr.set_loader_hyperparameters(
        Hyperparameters().add_categorical("batch_size", list(spec.batch_sizes))
    )
    tr.set_model(model)
    tr.prime_model(n_in=n_in, n_out=n_out)
    tr.set_criterion(loss_class(family))
    tr.set_optimizer(SGD)
    return tr
