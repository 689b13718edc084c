"""Predicting with a finished run: ``load_run`` and ``hpo-trainer predict`` on real digits runs,
through the exported program and through the rebuilt model, and their refusals."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scenarios import hpo

from hpo_trainer import CheckpointError, ConfigError, DataError, cli, load_run
from hpo_trainer.apps.final import final_run
from hpo_trainer.apps.predict import predict_file
from hpo_trainer.facade.studyfile import load_module, load_trainer_from_file

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "studies" / "digits_mlp.py"
CNN = ROOT / "studies" / "digits_cnn_imagefolder.py"
PARAMS = {"optimizer": {"lr": 0.05}, "model": {"hidden_size": 32}}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models: one thread is faster than several on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def test_split() -> tuple[torch.Tensor, torch.Tensor]:
    return load_module(MLP).load_digits_split()["test"]


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A 2-epoch final run of the MLP study, and its model as trained."""
    runs = tmp_path_factory.mktemp("runs")
    trainer = load_trainer_from_file(MLP, runs_dir=runs, quiet=True)
    summary = final_run(trainer, params=PARAMS, epochs=2)
    return Path(summary["run_dir"]), trainer.get_model().eval()


def _direct(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _copy_run(run_dir: Path, to: Path, *, without: tuple[str, ...] = ()) -> Path:
    shutil.copytree(run_dir, to)
    for name in without:
        (to / name).unlink()
    return to


def test_summary_records_study_file_and_input_shape(mlp_run):
    summary = json.loads((mlp_run[0] / "summary.json").read_text())
    assert summary["study_file"] == {"path": str(MLP.resolve()), "options": {}}
    assert summary["input"]["shape"] == [64] and summary["input"]["dtype"] == "float32"
    stats = summary["input"]["stats"]  # the range of the training inputs, per feature
    assert len(stats["min"]) == len(stats["max"]) == 64 and max(stats["max"]) == 1.0
    assert summary["params"] == PARAMS and (mlp_run[0] / "model.pt2").is_file()


@pytest.mark.parametrize("exported", [True, False], ids=["exported_program", "rebuilt"])
def test_load_run_predicts_what_the_model_itself_predicts(mlp_run, test_split, exported):
    run_dir, model = mlp_run
    x, _ = test_split
    run = load_run(run_dir, trust_exported=exported)
    assert run.source == ("exported_program" if exported else "state_dict")
    assert run.params == PARAMS and 0 <= run.metrics["test/acc"] <= 1
    expected = _direct(model, x)
    got = run.predict(x, batch_size=7)  # batched: the last batch has 3 rows
    assert isinstance(got, torch.Tensor) and torch.allclose(got, expected, atol=1e-5)
    as_array = run.predict(x.numpy().astype(np.float64))
    assert isinstance(as_array, np.ndarray) and np.allclose(as_array, expected.numpy(), atol=1e-5)


def test_cli_train_then_predict_the_test_split(tmp_path, test_split):
    """`train` then `predict` in subprocesses, as a user runs them; .npy in, CSV and .npy out."""
    x, _ = test_split
    (tmp_path / "best.json").write_text(json.dumps({"params": PARAMS}))
    run_dir = tmp_path / Path(
        hpo("train", MLP, "--params", "best.json", "--epochs", "2", cwd=tmp_path).stdout.strip()
    )
    np.save(tmp_path / "x.npy", x.numpy())
    hpo("predict", run_dir, "--input", "x.npy", "--out", "p.csv", cwd=tmp_path)
    model = load_module(MLP).Net(input_size=64, hidden_size=32, target_length=10)
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    logits = _direct(model.eval(), x)
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0].split(",") == ["class"] + [f"prob_{k}" for k in range(10)]
    table = np.array([[float(c) for c in r.split(",")] for r in rows[1:]])
    assert np.array_equal(table[:, 0], logits.argmax(1).numpy())
    assert np.allclose(table[:, 1:], torch.softmax(logits, 1).numpy(), atol=1e-6)


def test_csv_npz_pt_inputs_and_json_npy_outputs(mlp_run, test_split, tmp_path):
    run_dir, model = mlp_run
    x = test_split[0][:20]
    classes = _direct(model, x).argmax(1).numpy()
    run = load_run(run_dir)
    csv_in = tmp_path / "x.csv"
    header = ",".join(f"pixel_{i}" for i in range(64))
    csv_in.write_text(header + "\n" + "\n".join(",".join(map(repr, r)) for r in x.tolist()))
    np.savez(tmp_path / "x.npz", inputs=x.numpy(), labels=np.arange(20))
    torch.save(x, tmp_path / "x.pt")
    predict_file(run, csv_in, out=tmp_path / "a.npy")
    assert np.array_equal(np.load(tmp_path / "a.npy"), classes)
    predict_file(run, tmp_path / "x.npz", key="inputs", out=tmp_path / "b.json")
    rows = json.loads((tmp_path / "b.json").read_text())
    assert [r["class"] for r in rows] == classes.tolist()
    assert abs(sum(rows[0][f"prob_{k}"] for k in range(10)) - 1) < 1e-9
    assert (
        predict_file(run, tmp_path / "x.pt").decode().splitlines()[1].startswith(f"{classes[0]},")
    )
    with pytest.raises(ConfigError, match=r"holds 2 arrays \(inputs, labels\); choose one"):
        predict_file(run, tmp_path / "x.npz")


def test_wrong_feature_count_names_the_shape_and_writes_nothing(mlp_run, tmp_path):
    run = load_run(mlp_run[0])
    np.save(tmp_path / "bad.npy", np.zeros((3, 65), dtype=np.float32))
    out = tmp_path / "p.csv"
    with pytest.raises(DataError, match=r"shape \(3, 65\).*expects \(N, 64\): 64 features"):
        predict_file(run, tmp_path / "bad.npy", out=out)
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "bad.npy"]


def test_missing_or_damaged_weights_are_clear_errors(mlp_run, tmp_path):
    bare = _copy_run(mlp_run[0], tmp_path / "bare", without=("model.pt", "model.pt2"))
    with pytest.raises(CheckpointError, match=r"has no weights \(model.pt\).*train it again"):
        load_run(bare)
    cut = _copy_run(mlp_run[0], tmp_path / "cut")
    for name in ("model.pt", "model.pt2"):
        data = (cut / name).read_bytes()
        (cut / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model.pt2' cannot be loaded.*delete it"):
        load_run(cut, trust_exported=True)
    with pytest.raises(CheckpointError, match=r"model.pt is damaged"):
        load_run(cut)
    with pytest.raises(ConfigError, match=r"has no summary.json"):
        load_run(mlp_run[0].parent)


def test_study_file_override_when_the_run_does_not_record_it(mlp_run, test_split, tmp_path):
    old = _copy_run(mlp_run[0], tmp_path / "old", without=("model.pt2",))
    summary = json.loads((old / "summary.json").read_text())
    summary.pop("study_file")
    (old / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match=r"records no study file.*trainer=tr.*--study-file"):
        load_run(old)
    run = load_run(old, study_file=MLP)
    x = test_split[0]
    assert torch.allclose(run.predict(x), _direct(mlp_run[1], x), atol=1e-5)


def test_cli_exit_codes(mlp_run, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((2, 10), dtype=np.float32))
    argv = ["predict", str(mlp_run[0]), "--input", str(tmp_path / "bad.npy")]
    assert cli.main([*argv, "--out", str(tmp_path / "p.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the input has shape (2, 10)") and "Traceback" not in err
    assert not (tmp_path / "p.json").exists()
    assert cli.main([*argv, "--out", str(tmp_path / "p.txt")]) == 1
    assert "must be a file ending in one of .csv, .json, .npy" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--batch-size", "0"])
    assert exc.value.code == 2


def test_image_folder_through_the_study_files_eval_transform(tmp_path):
    study = load_module(CNN)
    root = study.write_digits_pngs(tmp_path / "pngs")
    trainer = load_trainer_from_file(
        CNN, data_root=str(root), runs_dir=tmp_path / "runs", quiet=True, batch_size=128
    )
    params = {"optimizer": {"class": "Adam", "lr": 0.01}, "model": {"channels": 8, "dropout": 0.1}}
    summary = final_run(trainer, params=params, epochs=1)
    assert summary["study_file"]["options"] == {"data_root": str(root), "batch_size": 128}
    assert summary["input"]["shape"] == [1, 8, 8]
    images = tmp_path / "images"
    shutil.copytree(root / "test" / "3", images)
    files = sorted(images.iterdir())
    x = torch.stack([study.EVAL_TRANSFORM(Image.open(p).convert("RGB")) for p in files])
    expected = _direct(trainer.get_model().eval(), x).argmax(1).tolist()
    for exported in (True, False):
        run = load_run(summary["run_dir"], trust_exported=exported)
        rows = predict_file(run, images).decode().splitlines()
        assert rows[0].startswith("file,class,prob_0")
        assert [r.split(",")[0] for r in rows[1:]] == [p.name for p in files]
        assert [int(r.split(",")[1]) for r in rows[1:]] == expected
    big = tmp_path / "big"
    big.mkdir()
    Image.new("L", (16, 16)).save(big / "a.png")
    with pytest.raises(DataError, match=r"expects \(N, 1, 8, 8\): images of 1x8x8.*resize"):
        predict_file(run, big)
