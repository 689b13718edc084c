"""The hpo-trainer command, driven the way a user does: subprocesses on real files."""

import json
import socket
import subprocess
from pathlib import Path

import pytest
from scenarios import BIN, hpo

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "digits_mlp.py"


def test_search_status_export_train_end_to_end(tmp_path):
    hpo(
        "search",
        STUDY,
        "--trials",
        "6",
        "--epochs",
        "3",
        "--workers",
        "2",
        "--seed",
        "0",
        cwd=tmp_path,
    )
    status = json.loads(hpo("status", "--json", cwd=tmp_path).stdout)
    assert status[0]["study"] == "digits_mlp"
    assert status[0]["states"].get("COMPLETE", 0) + status[0]["states"].get("PRUNED", 0) == 6
    assert "best" in status[0]
    table = hpo("status", cwd=tmp_path).stdout
    assert "study digits_mlp (minimize val/loss): 6 trials" in table and "best: trial" in table

    out = hpo("export", "--out", "best.json", "--top", "3", cwd=tmp_path).stdout
    assert out.strip() == "best.json"
    record = json.loads((tmp_path / "best.json").read_text())
    assert set(record["params"]) == {"optimizer", "model"}
    assert record["study"] == "digits_mlp" and len(record["top"]) == 3
    assert record["study_file_sha256"] and record["versions"]["optuna"]

    # the optuna command line agrees with our export
    best = subprocess.run(
        [
            BIN / "optuna",
            "best-trial",
            "--study-name",
            "digits_mlp",
            "--storage",
            f"sqlite:///{tmp_path}/runs/studies.db",
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    best = json.loads(best)
    assert best["number"] == record["trial"]
    flat = {f"{t}.{k}": v for t, vs in record["params"].items() for k, v in vs.items()}
    assert best["params"] == flat

    run_dir = Path(
        hpo("train", STUDY, "--params", "best.json", "--epochs", "3", cwd=tmp_path).stdout.strip()
    )
    run_dir = tmp_path / run_dir if not run_dir.is_absolute() else run_dir
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 3 and "test/acc" in summary["final_metrics"]
    assert summary["searched_in"]["trial"] == record["trial"]
    assert (run_dir / "model.pt").exists()
    assert (run_dir / "checkpoints" / "epoch-0003.pt").exists()


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("args", "code", "match"),
    [
        (["search", "nope.py"], 1, "study file 'nope.py' does not exist"),
        (["search", STUDY, "--workers", "0"], 2, "--workers: must be 1 or more, got 0"),
        (["search", STUDY, "--epochs", "-1"], 2, "--epochs: must be 1 or more, got -1"),
        (["search", STUDY, "--storage", "sqlite:/x.db"], 1, "three slashes"),
        (["search", STUDY, "--sampler", "tpee"], 1, "Did you mean 'tpe'"),
        (["status"], 1, "no study storage at runs/studies.db"),
        (["train", STUDY, "--params", "missing.json"], 1, "params file 'missing.json' does not"),
    ],
)
def test_bad_input_is_one_clear_message_and_nothing_is_written(tmp_path, args, code, match):
    proc = hpo(*args, cwd=tmp_path, check=False)
    assert proc.returncode == code, proc.stderr
    assert match in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_study_file_without_make_trainer(tmp_path):
    bad = _write(tmp_path, "bad.py", "X = 1\n")
    proc = hpo("search", bad, cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "must define make_trainer" in proc.stderr
    broken = _write(tmp_path, "broken.py", "import nonexistent_module_xyz\n")
    proc = hpo("search", broken, cwd=tmp_path, check=False)
    assert "failed to import: ModuleNotFoundError" in proc.stderr
    proc = hpo("--debug", "search", broken, cwd=tmp_path, check=False)
    assert "Traceback" in proc.stderr


def test_unknown_study_name_lists_the_existing_ones_and_bad_params_file(tmp_path):
    hpo("search", STUDY, "--trials", "2", "--epochs", "1", cwd=tmp_path)
    proc = hpo("export", "--study-name", "digits_mpl", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "it has: digits_mlp" in proc.stderr and "Did you mean 'digits_mlp'" in proc.stderr
    _write(tmp_path, "bad.json", json.dumps({"params": {"optimizer": {"lr": 7.0}}}))
    proc = hpo("train", STUDY, "--params", "bad.json", cwd=tmp_path, check=False)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 1 and "'lr' must lie in" in err and "'hidden_size' is missing" in err
    _write(tmp_path, "trunc.json", '{"params": {"optimizer": ')
    proc = hpo("train", STUDY, "--params", "trunc.json", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "is not valid JSON" in proc.stderr
    assert len(list((tmp_path / "runs").glob("digits_mlp-*"))) == 0  # no run folder made


def test_export_without_a_completed_trial(tmp_path):
    import optuna

    (tmp_path / "runs").mkdir()
    optuna.create_study(study_name="empty", storage=f"sqlite:///{tmp_path}/runs/studies.db")
    proc = hpo("export", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "no completed trial" in proc.stderr
    assert not (tmp_path / "best.json").exists()


def test_dashboard_port_in_use(tmp_path):
    hpo("search", STUDY, "--trials", "1", "--epochs", "1", cwd=tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = hpo("dashboard", "--port", port, cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "port is in use" in proc.stderr


def test_version_and_help():
    from hpo_trainer import __version__

    assert hpo("--version", cwd=ROOT).stdout.strip() == f"hpo-trainer {__version__}"
    for command in ("search", "status", "export", "train", "dashboard", "report", "migrate"):
        assert "Example: hpo-trainer" in " ".join(hpo(command, "--help", cwd=ROOT).stdout.split())


def test_report_is_one_offline_html_file_with_the_plots(tmp_path):
    proc = hpo("search", STUDY, "--trials", "4", "--epochs", "2", "--seed", "0", cwd=tmp_path)
    # live progress: the finished count and the best so far, without per-trial log noise
    assert "4/4 trials finished" in proc.stderr and "| best " in proc.stderr
    assert "[worker" not in proc.stderr
    assert hpo("report", "--out", "r.html", cwd=tmp_path).stdout.strip() == "r.html"
    page = (tmp_path / "r.html").read_text()
    for heading in (
        "Optimization history",
        "Intermediate values",
        "Parallel coordinates",
        "Parameter importances",
        "Slices",
    ):
        assert f"<h2>{heading}" in page
    assert page.count("plotly.js v") == 1  # the library embedded once: works offline
    assert "https://cdn" not in page.split("<h1>")[1][:2000]


def test_study_file_options_from_the_command_line(tmp_path):
    cnn = ROOT / "studies" / "digits_cnn_imagefolder.py"
    hpo(
        "search",
        cnn,
        "-o",
        f"data_root={tmp_path / 'pngs'}",
        "--trials",
        "1",
        "--epochs",
        "1",
        cwd=tmp_path,
    )
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == ["test", "train", "val"]
    proc = hpo("search", STUDY, "--option", "colour=red", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "unexpected keyword argument 'colour'" in proc.stderr
    proc = hpo("search", STUDY, "--option", "nonsense", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "must be NAME=VALUE" in proc.stderr
