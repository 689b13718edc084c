"""From the search to the shipped model: the final run repeats the trial's recipe and keeps
its best epoch, ``--from-trial`` ships the trial's own weights, and the Python API's runs
load with ``load_run``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from scenarios import hpo

from hpo_trainer import ConfigError, Hyperparameters, Trainer, load_run
from hpo_trainer.apps.final import compare, final_run
from hpo_trainer.facade.studyfile import load_trainer_from_file
from hpo_trainer.train import checkpoint

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "studies" / "digits_mlp.py"


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A 3-trial search of the digits study from the command line, and its export."""
    cwd = tmp_path_factory.mktemp("searched")
    hpo("search", MLP, "--trials", "3", "--epochs", "6", "--seed", "3", "--quiet", cwd=cwd)
    hpo("export", "--out", "best.json", cwd=cwd)
    return cwd, json.loads((cwd / "best.json").read_text())


def test_export_records_the_trials_recipe(searched):
    cwd, record = searched
    study = optuna.load_study(study_name="digits_mlp", storage=f"sqlite:///{cwd}/runs/studies.db")
    trial = study.trials[record["trial"]]
    recipe = record["recipe"]
    assert recipe["epochs"] == 6 and recipe["seed"] == 3 + record["trial"]
    assert recipe["best_epoch"] == trial.user_attrs["best_epoch"]
    assert recipe["threads"] == trial.user_attrs["threads"] >= 1
    # Absolute, so that the params file works from any folder.
    assert Path(recipe["checkpoint"]).is_absolute() and Path(recipe["checkpoint"]).is_file()
    assert record["storage"] == f"sqlite:///{(cwd / 'runs' / 'studies.db').resolve()}"


def test_train_repeats_the_trial_and_says_how_the_values_compare(searched):
    cwd, record = searched
    proc = hpo("train", MLP, "--params", "best.json", cwd=cwd)
    run_dir = cwd / proc.stdout.strip()
    summary = json.loads((run_dir / "summary.json").read_text())
    # The trial's own recipe: its epochs (not TRAIN's 30), its seed and its threads.
    assert summary["epochs"] == 6 and summary["recipe"]["seed"] == record["recipe"]["seed"]
    assert summary["recipe"]["threads"] == record["recipe"]["threads"]
    assert f"training trial {record['trial']}'s recipe: 6 epochs" in proc.stderr
    assert "TRAIN epochs (30) give way to the trial's own (6)" in proc.stderr
    # On the CPU it repeats the trial epoch for epoch: the same best epoch and value.
    assert summary["kept_epoch"] == record["recipe"]["best_epoch"]
    assert summary["final_metrics"]["val/loss"] == pytest.approx(record["value"], rel=1e-6)
    assert "(1.000x)" in proc.stderr and f"trial {record['trial']}:" in proc.stderr


def test_from_trial_ships_the_trials_best_epoch_without_training(searched):
    cwd, record = searched
    proc = hpo("train", MLP, "--params", "best.json", "--from-trial", cwd=cwd)
    run_dir = cwd / proc.stdout.strip()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_metrics"]["val/loss"] == pytest.approx(record["value"], rel=1e-6)
    assert summary["recipe"]["trial_epoch"] == record["recipe"]["best_epoch"]
    assert "test/acc" in summary["final_metrics"] and not (run_dir / "checkpoints").exists()
    # The weights shipped are the trial checkpoint's best-epoch weights, byte for byte.
    ckpt = checkpoint.load(cwd / record["recipe"]["checkpoint"])
    best = next(v for k, v in ckpt["callbacks"].items() if k.startswith("KeepBest"))
    shipped = checkpoint.load(run_dir / "model.pt")
    assert all(torch.equal(shipped[k], best["weights"][k]) for k in best["weights"])
    run = load_run(run_dir)
    assert run.source == "state_dict" and run.predict(np.zeros((2, 64))).shape == (2, 10)


def test_from_trial_without_the_checkpoint_is_a_clear_error(searched, tmp_path):
    cwd, record = searched
    bad = dict(record, recipe={**record["recipe"], "checkpoint": str(tmp_path / "gone.pt")})
    (tmp_path / "best.json").write_text(json.dumps(bad))
    proc = hpo("train", MLP, "--params", "best.json", "--from-trial", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "checkpoint" in proc.stderr and "is gone: only the keep_checkpoints best" in proc.stderr
    assert "leave out --from-trial" in proc.stderr and not (tmp_path / "runs").exists()


def test_a_crafted_recipe_is_refused(tmp_path):
    (tmp_path / "best.json").write_text(
        json.dumps({"params": {"optimizer": {"lr": 0.01}}, "recipe": {"seed": "x", "epochs": 0}})
    )
    proc = hpo("train", MLP, "--params", "best.json", cwd=tmp_path, check=False)
    assert proc.returncode == 2 or proc.returncode == 1
    assert "recipe seed must be an integer from 0 to 4294967295, got 'x'" in proc.stderr
    assert "recipe epochs must be an integer from 1 to 1000000, got 0" in proc.stderr


def _unstable_trainer(runs_dir: Path) -> Trainer:
    """A digits MLP whose learning rate is high enough that validation loss rises late."""
    from digits_mlp import Net, load_digits_split

    splits = load_digits_split()
    tr = Trainer(
        splits["train"], splits["val"], splits["test"], seed=0, runs_dir=runs_dir, quiet=True
    )
    tr.set_model(Net)
    tr.prime_model(input_size=64, hidden_size=64, target_length=10)
    tr.set_criterion(torch.nn.CrossEntropyLoss)
    tr.set_optimizer(torch.optim.Adam)
    tr.prime_optimizer(lr=0.1)
    return tr


def test_train_keeps_the_best_epoch_and_load_run_gets_the_python_apis_run(tmp_path):
    tr = _unstable_trainer(tmp_path)
    history = tr.train(epochs=12)
    val = history["val/loss"]
    best = int(np.argmin(val)) + 1
    assert best < 12, "the lr must overfit for this test to mean anything"
    summary = json.loads((tr.run_dir / "summary.json").read_text())
    assert summary["kept_epoch"] == best and summary["epochs"] == 12
    assert summary["final_metrics"]["val/loss"] == val[best - 1]
    assert summary["last_metrics"]["val/loss"] == val[-1]
    # The model the trainer holds, the one saved and the one load_run gives: the best epoch.
    x, y = tr.val_data
    with torch.no_grad():
        held = torch.nn.functional.cross_entropy(tr.get_model().eval()(x), y).item()
    assert held == pytest.approx(val[best - 1], rel=1e-5)
    with pytest.raises(
        ConfigError, match=r"records no study file.*load_run\(run_dir, trainer=tr\)"
    ):
        load_run(tr.run_dir)
    run = load_run(tr.run_dir, trainer=tr)
    with torch.no_grad():
        expected = tr.get_model()(x)
    assert torch.allclose(run.predict(x), expected, atol=1e-6)
    last = _unstable_trainer(tmp_path)
    last.train(epochs=12, keep="last")
    assert json.loads((last.run_dir / "summary.json").read_text())["kept_epoch"] == 12


def test_train_after_hyp_opt_repeats_the_best_trial(tmp_path):
    tr = load_trainer_from_file(MLP, runs_dir=tmp_path, quiet=True)
    study = tr.hyp_opt(epochs=4, iters=2, seed=5, pruner="none")
    tr.train(epochs=4)
    summary = tr.summary
    assert summary["searched_in"]["trial"] == study.best_trial.number
    assert summary["recipe"]["seed"] == study.best_trial.user_attrs["seed"]
    assert summary["final_metrics"]["val/loss"] == pytest.approx(study.best_value, rel=1e-6)
    assert compare(summary).endswith("(1.000x)")


def test_final_run_restores_the_thread_count(tmp_path):
    tr = _unstable_trainer(tmp_path)
    before = torch.get_num_threads()
    summary = final_run(tr, params=None, epochs=1, threads=1)
    assert summary["recipe"]["threads"] == 1 and torch.get_num_threads() == before
    with pytest.raises(ConfigError, match=r"threads must be an integer from 1 to 1024, got 0"):
        final_run(tr, params=None, epochs=1, threads=0)


def test_bad_keep_and_monitor_are_refused_together(tmp_path):
    tr = _unstable_trainer(tmp_path)
    with pytest.raises(ConfigError) as info:
        tr.train(epochs=1, keep="first", monitor=("val/loss", "down"), seed=-1)
    text = str(info.value)
    assert "keep must be 'best'" in text and "monitor must be a (metric, direction)" in text
    assert "seed must be an integer from 0 to 2**32 - 1" in text
    assert not list(Path(tmp_path).glob("experiment-*"))


def test_hyperparameters_example_in_the_readme_still_runs(tmp_path):
    """The template's flow, end to end: hyp_opt, train, and the run folder's files."""
    tr = _unstable_trainer(tmp_path)
    tr.prime_optimizer()  # the lr is searched instead
    hyp = Hyperparameters()
    hyp.register("lr")
    hyp.set_range("lr", -3, -2)
    tr.set_hyperparameters(hyp)
    tr.hyp_opt(epochs=2, iters=2)
    tr.train(epochs=2)
    assert {"model.pt", "summary.json"} <= {p.name for p in tr.run_dir.iterdir()}


def test_a_study_file_imports_modules_beside_it(tmp_path):
    (tmp_path / "shared_parts.py").write_text(
        (ROOT / "studies" / "digits_mlp.py").read_text().replace('name": "digits_mlp', 'name": "x')
    )
    (tmp_path / "study.py").write_text(
        "from shared_parts import make_trainer  # a module beside the study file\n"
    )
    trainer = load_trainer_from_file(tmp_path / "study.py", runs_dir=tmp_path, quiet=True)
    assert trainer.name == "x"


def test_from_trial_refuses_options_it_would_ignore(searched):
    cwd, _ = searched
    proc = hpo(
        "train", MLP, "--params", "best.json", "--from-trial", "--epochs", "9", "--seed", "1",
        cwd=cwd, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "--epochs, --seed would change nothing" in proc.stderr


def test_a_monitor_the_run_does_not_record_is_refused(tmp_path):
    tr = _unstable_trainer(tmp_path)
    with pytest.raises(ConfigError, match=r"chosen by 'nope'.*choose one of train/loss"):
        tr.train(epochs=1, monitor=("nope", "min"))
    with pytest.raises(ConfigError, match="must not be a test metric"):
        tr.train(epochs=1, monitor=("test/acc", "max"))
    with pytest.raises(ConfigError, match=r"seed must be an integer from 0 to 2\*\*32 - 1"):
        tr.train(epochs=1, seed=2**64)
    assert not list(Path(tmp_path).glob("experiment-*"))


def test_resume_with_other_params_is_refused(tmp_path):
    tr = load_trainer_from_file(MLP, runs_dir=tmp_path, quiet=True)
    params = {"optimizer": {"lr": 0.01}, "model": {"hidden_size": 16}}
    tr.train(epochs=1, params=params)
    other = {"optimizer": {"lr": 0.05}, "model": {"hidden_size": 16}}
    with pytest.raises(ConfigError, match="was trained with other params"):
        tr.train(epochs=2, params=other, resume=tr.run_dir)
    tr.train(epochs=2, params=params, resume=tr.run_dir)  # its own: resumes
    assert tr.summary["epochs"] == 2


@pytest.mark.parametrize("env_driver", ["postgresql+psycopg", "postgresql"])
def test_a_masked_storage_attaches_through_the_environments_full_url(
    tmp_path, pg_url, monkeypatch, env_driver
):
    """A params file masks the password; the run attaches when HPO_TRAINER_STORAGE names the
    same database, however its URL is spelled, and not when it names another."""
    import uuid
    from types import SimpleNamespace

    from sqlalchemy.engine import make_url

    from hpo_trainer.apps.final import _attach
    from hpo_trainer.search import optuna_api
    from hpo_trainer.search.storage import mask_url, open_storage

    full = make_url(pg_url).set(password="s3cret")  # trust auth here: any password works
    url = full.render_as_string(hide_password=False)
    name = f"attach-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=open_storage(url))
    run = tmp_path / "run-1"
    run.mkdir()
    (run / "summary.json").write_text("{}")
    summary = {"run_dir": str(run), "files": {}}
    trainer = SimpleNamespace(runs_dir=tmp_path / "runs")
    masked = {"storage": mask_url(url), "study": name}
    assert "***" in masked["storage"]
    try:
        other = full.set(database="postgres").render_as_string(hide_password=False)
        monkeypatch.setenv("HPO_TRAINER_STORAGE", other)
        _attach(trainer, summary, masked)  # another database: not attached
        assert optuna_api.study_records(study) == {}
        monkeypatch.setenv(
            "HPO_TRAINER_STORAGE", full.set(drivername=env_driver).render_as_string(False)
        )
        _attach(trainer, summary, masked)
        records = optuna_api.study_records(study)
        assert len(records) == 1 and "run-1-summary.json" in next(iter(records.values()))
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(url))
