"""The ImageFolder digits study: the PNG tree, reading it back, training, and a tiny search."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from sklearn.datasets import load_digits
from torchvision import datasets, transforms

from hpo_trainer import ConfigError, DataError
from hpo_trainer.facade.studyfile import load_module, load_trainer_from_file

STUDY = Path(__file__).resolve().parents[1] / "studies" / "digits_cnn_imagefolder.py"
N_DIGITS = 1797
SPLIT_SIZES = {"train": 1078, "val": 359, "test": 360}  # int(0.6 n), int(0.2 n), the rest
CLASSES = [str(c) for c in range(10)]
ARCH = {"channels": 16, "dropout": 0.1}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Train these tiny models on one thread.

    Batches of 64 8x8 images are far too small to gain from intra-op threads, and when the
    cores are busy with other work, two spinning OpenMP threads made a 3-epoch run take
    ~8 s instead of ~0.5 s. The previous setting is restored afterwards.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def study() -> ModuleType:
    return load_module(STUDY)


@pytest.fixture(scope="module")
def data_root(study: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PNG tree shared by the tests that only read it."""
    return study.write_digits_pngs(tmp_path_factory.mktemp("data") / "digits_png")


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*")
    }


def test_tree_is_written_once_with_the_split(study: ModuleType, tmp_path: Path) -> None:
    root = tmp_path / "digits_png"
    assert study.write_digits_pngs(root) == root

    assert sorted(p.name for p in root.iterdir()) == ["test", "train", "val"]
    names: set[str] = set()
    for split, size in SPLIT_SIZES.items():
        assert sorted(p.name for p in (root / split).iterdir()) == CLASSES
        files = list((root / split).glob("*/*.png"))
        assert len(files) == size
        names.update(p.name for p in files)
    assert sum(SPLIT_SIZES.values()) == N_DIGITS
    assert names == {f"{i}.png" for i in range(N_DIGITS)}  # every image exactly once
    # The temporary folder was renamed into place; nothing is left next to the root.
    assert list(tmp_path.iterdir()) == [root]

    before = _snapshot(root)
    assert study.write_digits_pngs(root) == root
    assert _snapshot(root) == before  # not rewritten: same files, same inodes and mtimes


def test_an_incomplete_tree_is_refused_not_used(study: ModuleType, tmp_path: Path) -> None:
    root = tmp_path / "digits_png"
    (root / "train" / "0").mkdir(parents=True)
    (root / "train" / "0" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="not a complete digits PNG tree"):
        study.write_digits_pngs(root)


def test_imagefolder_reads_the_tree(study: ModuleType, data_root: Path) -> None:
    to_tensor = transforms.Compose([transforms.Grayscale(1), transforms.ToTensor()])
    val = datasets.ImageFolder(str(data_root / "val"), transform=to_tensor)
    assert len(val) == SPLIT_SIZES["val"]
    assert val.classes == CLASSES
    assert val.class_to_idx == {c: int(c) for c in CLASSES}

    item = val[0]
    assert isinstance(item, tuple) and len(item) == 2
    x, y = item
    assert isinstance(x, torch.Tensor) and x.shape == (1, 8, 8) and x.dtype == torch.float32
    assert isinstance(y, int)

    # The pixels and the label are those of the digit the file is named after.
    digits = load_digits()
    for k in (0, len(val) // 2, len(val) - 1):
        path, label = val.samples[k]
        index = int(Path(path).stem)
        assert label == digits.target[index]
        expected = np.rint(digits.images[index] * 255 / 16)
        np.testing.assert_array_equal(np.rint(val[k][0][0].numpy() * 255), expected)

    train, val2, test = study.make_datasets(data_root)
    assert [len(train), len(val2), len(test)] == list(SPLIT_SIZES.values())
    x, y = train[0]  # augmented, same layout
    assert x.shape == (1, 8, 8) and isinstance(y, int)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_short_training_run_learns(data_root: Path, tmp_path: Path) -> None:
    tr = load_trainer_from_file(STUDY, data_root=data_root, runs_dir=tmp_path, quiet=True)
    assert tr.name == "digits_cnn" and tr.batch_size == 64 and tr.seed == 0

    history = tr.train(
        epochs=3, params={"optimizer": {"class": "Adam", "lr": 3e-3}, "model": ARCH}
    )

    assert len(history["val/acc"]) == 3
    assert len(history["test/acc"]) == 3
    assert history["val/acc"][-1] > 0.5  # chance is 0.1
    assert history["train/loss"][-1] < history["train/loss"][0]
    assert type(tr.optimizer) is torch.optim.Adam and tr.optimizer.defaults["lr"] == 3e-3
    assert tr.run_dir is not None and tr.run_dir.parent == tmp_path
    assert list((tr.run_dir / "checkpoints").glob("epoch-*.pt"))


def test_momentum_is_only_a_parameter_of_sgd(data_root: Path, tmp_path: Path) -> None:
    tr = load_trainer_from_file(STUDY, data_root=data_root, runs_dir=tmp_path, quiet=True)
    sgd = {"optimizer": {"class": "SGD", "lr": 0.01, "momentum": 0.9}, "model": ARCH}
    assert tr.resolve_params(sgd)["optimizer"] == {
        "class": torch.optim.SGD,
        "lr": 0.01,
        "momentum": 0.9,
    }
    adam = {"optimizer": {"class": "Adam", "lr": 0.01}, "model": ARCH}
    assert tr.resolve_params(adam)["optimizer"] == {"class": torch.optim.Adam, "lr": 0.01}
    with pytest.raises(ConfigError, match="'momentum' is missing"):
        tr.resolve_params({"optimizer": {"class": "SGD", "lr": 0.01}, "model": ARCH})


def test_tiny_search(data_root: Path, tmp_path: Path) -> None:
    tr = load_trainer_from_file(STUDY, data_root=data_root, runs_dir=tmp_path, quiet=True)
    storage = f"sqlite:///{tmp_path}/s.db"
    # With seed 0 the sampler happens to draw Adam three times; queue one trial of each class
    # (the rest of their parameters is still sampled) so that both branches are checked.
    queued = optuna.create_study(study_name=tr.name, storage=storage, direction="minimize")
    queued.enqueue_trial({"optimizer.class": "SGD"})
    queued.enqueue_trial({"optimizer.class": "Adam"})

    study = tr.hyp_opt(epochs=2, iters=3, storage=storage, seed=0)

    assert len(study.trials) == 3
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3
    classes = set()
    for trial in finished:
        cls = trial.params["optimizer.class"]
        classes.add(cls)
        assert 1e-4 <= trial.params["optimizer.lr"] <= 1e-1
        if cls == "Adam":
            assert "optimizer.momentum" not in trial.params
        else:
            assert cls == "SGD"
            assert 0.0 <= trial.params["optimizer.momentum"] <= 0.95
    assert classes == {"SGD", "Adam"}
    assert (tmp_path / tr.name / "trial-0").is_dir()  # trials ran under runs_dir
