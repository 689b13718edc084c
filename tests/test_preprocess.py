"""Preprocessing travels with the model, inputs a run cannot vouch for are refused, and
loading a run executes nothing from the run folder.

The study is a tabular regression read from a CSV (scikit-learn's diabetes data, raw
columns), written by the test: once with its standardisation declared
(``set_preprocess(Standardize())``), once done by hand inside ``make_trainer``.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from hpo_trainer import CheckpointError, ConfigError, DataError, Standardize, load_run
from hpo_trainer.apps.final import final_run
from hpo_trainer.apps.predict import predict_file
from hpo_trainer.facade.studyfile import load_trainer_from_file

STUDY = textwrap.dedent(
    """
    import numpy as np
    from torch import nn
    from torch.optim import Adam

    from hpo_trainer import Standardize, Trainer

    class Regressor(nn.Module):
        def __init__(self, hidden: int = 32):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(10, hidden), nn.ReLU(), nn.Linear(hidden, 1))

        def forward(self, x):
            return self.net(x)

    def make_trainer(csv, declared=True, **options):
        data = np.loadtxt(csv, delimiter=",", skiprows=1, dtype=np.float32)
        x, y = data[:, :10], data[:, 10:]
        if not declared:  # the natural place, and what goes missing on the way to predict
            x = (x - x[:300].mean(0)) / x[:300].std(0)
        parts = [(x[:300], y[:300]), (x[300:370], y[300:370]), (x[370:], y[370:])]
        tr = Trainer(*parts, seed=0, batch_size=32, name="diabetes", **options)
        if declared:
            tr.set_preprocess(Standardize())
        tr.set_model(Regressor)
        tr.prime_model(hidden=32)
        tr.set_criterion(nn.MSELoss)
        tr.set_optimizer(Adam)
        tr.prime_optimizer(lr=0.05)
        return tr
    """
)


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory):
    from sklearn.datasets import load_diabetes

    folder = tmp_path_factory.mktemp("diabetes")
    data = load_diabetes(scaled=False)
    names = [*data.feature_names, "target"]
    table = np.column_stack([data.data, data.target])
    np.savetxt(folder / "data.csv", table, delimiter=",", header=",".join(names), comments="")
    new = folder / "new.csv"  # the test rows' features, raw, as a user would send them
    np.savetxt(new, data.data[370:], delimiter=",", header=",".join(names[:10]), comments="")
    (folder / "study.py").write_text(STUDY)
    return folder, data.target[370:]


def _train(folder: Path, declared: bool) -> dict:
    trainer = load_trainer_from_file(
        folder / "study.py",
        csv=str(folder / "data.csv"),
        declared=declared,
        runs_dir=folder / ("runs-declared" if declared else "runs-by-hand"),
        quiet=True,
    )
    return final_run(trainer, params=None, epochs=40)


def test_declared_preprocessing_is_applied_by_predict_to_raw_csv(diabetes):
    folder, target = diabetes
    summary = _train(folder, declared=True)
    assert summary["preprocess"].startswith("Standardize(")
    run = load_run(summary["run_dir"])
    assert run.source == "state_dict"
    rows = predict_file(run, folder / "new.csv").decode().splitlines()
    assert rows[0] == "value" and len(rows) == len(target) + 1
    predicted = np.array([float(r) for r in rows[1:]])
    rmse = float(np.sqrt(np.mean((predicted - target) ** 2)))
    test_rmse = float(np.sqrt(summary["final_metrics"]["test/loss"]))
    assert rmse == pytest.approx(test_rmse, rel=1e-3), (rmse, test_rmse)
    assert rmse < 70  # a fitted model: the target's own spread is about 77
    # The statistics are the model's buffers: in model.pt and (opt-in) in the program.
    weights = torch.load(Path(summary["run_dir"]) / "model.pt", weights_only=True)
    assert weights["preprocess.mean"].shape == (10,) and weights["preprocess.std"].min() > 0
    exported = load_run(summary["run_dir"], trust_exported=True)
    assert exported.source == "exported_program"
    x = np.loadtxt(folder / "new.csv", delimiter=",", skiprows=1, dtype=np.float32)
    assert np.allclose(exported.predict(x)[:, 0], predicted, rtol=1e-4)


def test_undeclared_preprocessing_is_refused_not_guessed(diabetes):
    folder, _ = diabetes
    summary = _train(folder, declared=False)
    run = load_run(summary["run_dir"])
    out = folder / "p.csv"
    with pytest.raises(DataError, match=r"cannot vouch.*set_preprocess.*--no-input-check"):
        predict_file(run, folder / "new.csv", out=out)
    assert not out.exists()
    # The user who knows better can still have them.
    assert len(predict_file(run, folder / "new.csv", check_inputs=False).splitlines()) > 1


def test_standardize_statistics_and_errors():
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    pre = Standardize().fit(x)
    assert torch.equal(pre.mean, torch.tensor([2.0, 5.0]))
    assert torch.equal(pre.std, torch.tensor([1.0, 1.0]))  # the constant column: centred only
    assert torch.equal(pre(x), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    batched = Standardize().fit([x[:1], x[1:]])
    assert torch.equal(batched.mean, pre.mean)
    with pytest.raises(ConfigError, match="was not fitted"):
        Standardize()(x)
    with pytest.raises(ConfigError, match="needs floating-point inputs"):
        Standardize().fit(torch.tensor([[1, 2]]))
    with pytest.raises(ConfigError, match=r"dims.*got \(1,\)"):
        Standardize(dims=(1,))
    loaded = Standardize()
    loaded.load_state_dict(pre.state_dict())
    assert torch.equal(loaded(x), pre(x))


# -- loading executes nothing from the run folder -------------------------------------------


@pytest.fixture(scope="module")
def finished(diabetes):
    folder, _ = diabetes
    return Path(_train(folder, declared=True)["run_dir"])


def _copy(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to)
    return to


def test_a_crafted_program_is_never_loaded_by_default(finished, tmp_path):
    run_dir = _copy(finished, tmp_path / "run")
    marker = tmp_path / "pwned"
    # Whatever model.pt2 holds, the default load never opens it.
    (run_dir / "model.pt2").write_bytes(b"PK\x03\x04 not a real archive " + bytes(64))
    run = load_run(run_dir)
    assert run.source == "state_dict" and not marker.exists()
    with pytest.raises(CheckpointError, match=r"cannot be loaded.*delete it"):
        load_run(run_dir, trust_exported=True)


def test_a_study_file_inside_the_run_folder_is_refused(finished, tmp_path):
    run_dir = _copy(finished, tmp_path / "run")
    marker = tmp_path / "pwned"
    (run_dir / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["study_file"] = {"path": str(run_dir / "evil.py"), "options": {}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match=r"inside its own folder.*--study-file"):
        load_run(run_dir)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("input", {"shape": "x", "dtype": "float32"}, "'input' must have a 'shape'"),
        ("input", {"shape": [10], "dtype": "evil"}, "unknown 'dtype' 'evil'"),
        ("params", ["a"], "'params' must map targets"),
        ("study_file", "study.py", "'study_file' must be"),
    ],
)
def test_a_damaged_summary_is_named(finished, tmp_path, field, value, message):
    run_dir = _copy(finished, tmp_path / "run")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary[field] = value
    (run_dir / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match=rf"is damaged: .*{message}.*train the run again"):
        load_run(run_dir)


def test_bad_arguments_to_the_python_api(finished):
    with pytest.raises(ConfigError, match=r"takes the run folder's path, got int 123"):
        load_run(123)  # type: ignore[arg-type]
    run = load_run(finished)
    with pytest.raises(DataError, match=r"takes a tensor or an array of examples.*NoneType"):
        run.predict(None)
    with pytest.raises(
        DataError, match=r"the examples must hold real numbers, but it holds text \(dtype <U1\)"
    ):
        run.predict(np.array([["a"] * 10]))
    x = np.zeros((3, 10), dtype=np.float32)
    x[1, 4] = np.nan
    with pytest.raises(
        DataError,
        match=r"1 of its 3 examples hold NaN or infinite values: examples \(rows, counted .*\) 1",
    ):
        run.predict(x)


# -- what the review found ------------------------------------------------------------------


def test_a_trainer_given_does_not_open_the_recorded_study_file(finished, tmp_path, diabetes):
    folder, _ = diabetes
    run_dir = _copy(finished, tmp_path / "run")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["study_file"] = {"path": str(run_dir / "evil.py"), "options": {}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    trainer = load_trainer_from_file(
        folder / "study.py", csv=str(folder / "data.csv"), runs_dir=tmp_path, quiet=True
    )
    with pytest.raises(ConfigError, match="inside its own folder"):
        load_run(run_dir, trainer=trainer)


@pytest.mark.parametrize(
    ("path", "message"),
    [("evil.py", "a relative path"), ("{runs}/evil.py", "inside the folder of runs")],
)
def test_a_study_file_that_came_with_the_runs_is_refused(finished, tmp_path, path, message):
    runs = tmp_path / "runs"
    run_dir = _copy(finished, runs / "run")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["study_file"] = {"path": path.format(runs=runs), "options": {}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match=message):
        load_run(run_dir)


def test_the_range_check_is_per_example(finished, diabetes):
    folder, _ = diabetes
    run = load_run(finished)
    x = np.loadtxt(folder / "new.csv", delimiter=",", skiprows=1, dtype=np.float32)
    assert run.predict(x).shape == (len(x), 1)  # every real row passes
    garbage = np.vstack([x, np.full((3, 10), 1e6, dtype=np.float32)])
    n = len(x)
    with pytest.raises(DataError, match=rf"3 of {n + 3} examples \(rows {n}, {n + 1}, {n + 2},"):
        run.predict(garbage)


def test_tensors_get_the_same_checks_as_arrays(finished):
    run = load_run(finished)
    with pytest.raises(DataError, match="booleans"):
        run.predict(torch.ones(2, 10, dtype=torch.bool))
    with pytest.raises(DataError, match="complex"):
        run.predict(torch.ones(2, 10, dtype=torch.complex64))
    with pytest.raises(DataError, match="holds no examples"):
        run.predict(torch.empty(0, 10))
    with pytest.raises(DataError, match="float or integer numbers, got dtype torch.float8"):
        run.predict(torch.ones(2, 10).to(torch.float8_e4m3fn))


def test_recorded_options_and_a_damaged_recipe(finished, tmp_path):
    run_dir = _copy(finished, tmp_path / "run")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["study_file"]["options"].update(runs_dir="elsewhere", quiet=False)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert load_run(run_dir).source == "state_dict"  # its own runs_dir and quiet win
    summary["recipe"] = "x"
    (run_dir / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match="'recipe' must be an object"):
        load_run(run_dir)
    with pytest.raises(ConfigError, match="trainer must be the hpo_trainer.Trainer"):
        load_run(finished, trainer="x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="options must map make_trainer keywords"):
        load_run(finished, options=[1])  # type: ignore[arg-type]


def test_standardize_dims_are_checked():
    assert Standardize(0).dims == (0,)
    with pytest.raises(ConfigError, match=r"averages over dimension 5.*shape \(2, 3\)"):
        Standardize((0, 5)).fit(torch.ones(2, 3))
