"""The template's image example made real: a small CNN on digits read from PNG files.

scikit-learn's bundled digits (1,797 8x8 grayscale images, values 0..16) are written once
as PNG files into an ImageFolder tree::

    <data_root>/{train,val,test}/<class 0-9>/<index>.png

with the same fixed-seed 60/20/20 split as ``studies/digits_mlp.py`` (``<index>`` is the
image's row in ``load_digits()``). The tree is written to a temporary folder next to
``data_root`` and renamed into place, so a half-written tree is never read; when a complete
tree is already there nothing is written. ``data_root`` defaults to
``runs/data/digits_png`` under the current directory.

The three splits are read with ``torchvision.datasets.ImageFolder`` (the training set with
a small random rotation and shift), so batches go through a ``DataLoader`` as any image
folder would. Searched: the optimizer class (SGD or Adam), its learning rate (1e-4 .. 1e-1,
log-uniform), SGD's momentum (only when SGD is chosen), and the network's width and dropout.

``EVAL_TRANSFORM`` is the evaluation transform (grayscale, to a 1x8x8 tensor in [0, 1]):
the validation and test sets use it, and ``hpo-trainer predict RUN_DIR --input FOLDER``
reads image files through it. A study file names its evaluation transform this way, as a
module-level ``EVAL_TRANSFORM`` or a ``make_transform()`` returning one (a callable from a
PIL image, opened in RGB, to a tensor); without one, predict converts images to grayscale
(one-channel models) or RGB and scales them to [0, 1].

Run it:
    hpo-trainer search studies/digits_cnn_imagefolder.py
    hpo-trainer export --out best.json
    hpo-trainer train studies/digits_cnn_imagefolder.py --params best.json

or from Python::

    tr = make_trainer(data_root="/tmp/digits_png", runs_dir="/tmp/runs")
    tr.hyp_opt(epochs=5, iters=10)
    tr.train(epochs=15, save_every=5)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision import datasets, transforms

from hpo_trainer import DataError, Hyperparameters, Trainer

#: Defaults for ``hpo-trainer search`` on this file.
SEARCH = {"epochs": 5, "n_trials": 10}
#: Defaults for ``hpo-trainer train`` on this file.
TRAIN = {"epochs": 15, "save_every": 5}

#: Where the PNG tree goes unless ``make_trainer(data_root=...)`` says otherwise.
DEFAULT_ROOT = Path("runs") / "data" / "digits_png"
SPLITS = ("train", "val", "test")
NUM_CLASSES = 10
#: The seed of the 60/20/20 split (the same split as ``digits_mlp.py``).
SPLIT_SEED = 0
#: The evaluation transform: ImageFolder opens every image as RGB; Grayscale(1) brings it
#: back to one channel. ``hpo-trainer predict`` reads image folders through it.
EVAL_TRANSFORM = transforms.Compose([transforms.Grayscale(1), transforms.ToTensor()])


class SmallCNN(nn.Module):
    """Two 3x3 convolutions, a 2x2 max-pool, dropout and a linear classifier, for 8x8 input.

    Args:
        channels: Feature maps of the first convolution (the second has twice as many).
        dropout: Dropout probability before the classifier.
        num_classes: Number of output logits.

    """

    def __init__(self, channels: int = 16, dropout: float = 0.1, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * channels * 4 * 4, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _split_layout(seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Return the digits' images as uint8 (0..255), their labels, and split -> row indices."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    n = len(images)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    n_train, n_val = int(0.6 * n), int(0.2 * n)
    parts = {
        "train": perm[:n_train],
        "val": perm[n_train : n_train + n_val],
        "test": perm[n_train + n_val :],
    }
    return images, labels, parts


def _expected_files(labels: np.ndarray, parts: dict[str, Any]) -> dict[Path, set[str]]:
    """Return class folder (relative to the root) -> the PNG names it must hold."""
    expected: dict[Path, set[str]] = {
        Path(split) / str(c): set() for split in SPLITS for c in range(NUM_CLASSES)
    }
    for split, rows in parts.items():
        for i in rows:
            expected[Path(split) / str(int(labels[i]))].add(f"{int(i)}.png")
    return expected


def _is_complete(root: Path, expected: dict[Path, set[str]]) -> bool:
    """Whether ``root`` holds exactly the expected PNG files (other files are ignored)."""
    for folder, names in expected.items():
        path = root / folder
        if not path.is_dir():
            return False
        if {p.name for p in path.iterdir() if p.suffix == ".png"} != names:
            return False
    return True


def write_digits_pngs(
    root: str | os.PathLike[str] = DEFAULT_ROOT, *, seed: int = SPLIT_SEED
) -> Path:
    """Write the digits as an ImageFolder tree of PNG files, unless it is already complete.

    Args:
        root: The tree's root; it gets ``train/``, ``val/`` and ``test/``.
        seed: The seed of the 60/20/20 split.

    Returns:
        ``root``, as a ``Path``.

    Raises:
        DataError: If ``root`` exists but does not hold the complete tree (delete it, or
            choose another ``data_root``).

    """
    from PIL import Image

    root = Path(root)
    images, labels, parts = _split_layout(seed)
    expected = _expected_files(labels, parts)
    if _is_complete(root, expected):
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(
            f"{str(root)!r} exists but is not a complete digits PNG tree "
            f"({{train,val,test}}/<class>/<index>.png); delete it to have it rewritten, or "
            "pass another data_root"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the root (same filesystem), then renamed into place in one step.
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for folder in expected:
            (tmp / folder).mkdir(parents=True)
        for split, rows in parts.items():
            for i in rows:
                path = tmp / split / str(int(labels[i])) / f"{int(i)}.png"
                Image.fromarray(images[i]).save(path)
        try:
            os.rename(tmp, root)  # replaces an empty folder, never a non-empty one
        except OSError:
            # Another process (a search worker) renamed its own complete copy first.
            if not _is_complete(root, expected):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def make_datasets(
    root: str | os.PathLike[str],
) -> tuple[datasets.ImageFolder, datasets.ImageFolder, datasets.ImageFolder]:
    """Return the train, val and test ``ImageFolder`` datasets of a written tree.

    Items are ``(image, label)``: a float tensor of shape 1x8x8 in [0, 1] and an int.
    """
    root = Path(root)
    augmented = transforms.Compose(
        [
            transforms.Grayscale(1),
            transforms.RandomAffine(degrees=10, translate=(0.1, 0.1)),
            transforms.ToTensor(),
        ]
    )
    return (
        datasets.ImageFolder(str(root / "train"), transform=augmented),
        datasets.ImageFolder(str(root / "val"), transform=EVAL_TRANSFORM),
        datasets.ImageFolder(str(root / "test"), transform=EVAL_TRANSFORM),
    )


def make_trainer(data_root: str | os.PathLike[str] | None = None, **options: Any) -> Trainer:
    """Build the configured trainer, writing the PNG tree first if it is not there yet.

    Args:
        data_root: Where the PNG tree is (or is written); default ``runs/data/digits_png``.
        **options: ``Trainer`` keywords overriding the defaults (e.g. ``runs_dir``,
            ``quiet``, ``device``).

    Returns:
        The trainer, with its model, optimizer and search spaces set.

    """
    root = write_digits_pngs(DEFAULT_ROOT if data_root is None else data_root)
    train, val, test = make_datasets(root)
    kwargs: dict[str, Any] = {"batch_size": 64, "seed": 0, "name": "digits_cnn", **options}
    tr = Trainer(train, val, test, **kwargs)

    tr.set_model(SmallCNN)
    tr.prime_model(num_classes=NUM_CLASSES)
    arch = Hyperparameters("model")
    arch.add_categorical("channels", [8, 16, 32])
    arch.add_float("dropout", 0.0, 0.5)
    tr.set_arch_hyperparameters(arch)

    tr.set_criterion(nn.CrossEntropyLoss)
    tr.set_optimizer(torch.optim.SGD)  # the default; the space below chooses the class
    opt = Hyperparameters()
    opt.choose_class([torch.optim.SGD, torch.optim.Adam])
    opt.set_range("lr", -4, -1)
    opt.add_float("momentum", 0.0, 0.95, when={"class": torch.optim.SGD})
    tr.set_hyperparameters(opt)
    return tr
