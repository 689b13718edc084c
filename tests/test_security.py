"""Secrets stay secret and defaults are safe: masked passwords everywhere we write or print,
safe checkpoint loading, a dashboard on loopback unless told otherwise."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from hpo_trainer.search.storage import mask_url

BIN = Path(sys.executable).parent
STUDY = Path(__file__).resolve().parents[1] / "studies" / "digits_mlp.py"
SECRET = "hunter2-do-not-print"


def _with_password(url: str) -> str:
    # trust authentication ignores the password: the server accepts it, so we can check
    # that it never shows up anywhere
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user.split(':')[0]}:{SECRET}@{host}"


def test_password_never_appears_in_output_exports_attrs_or_files(pg_url, tmp_path):
    url = _with_password(pg_url)
    name = f"secret-{os.getpid()}-{time.time_ns()}"
    run = dict(cwd=tmp_path, capture_output=True, text=True)
    try:
        outs = [
            subprocess.run(
                [
                    BIN / "hpo-trainer",
                    "search",
                    STUDY,
                    "--storage",
                    url,
                    "--study-name",
                    name,
                    "--trials",
                    "2",
                    "--epochs",
                    "1",
                    "--debug",
                ],
                **run,
            )
        ]
        assert outs[0].returncode == 0, outs[0].stderr
        for args in (["status"], ["status", "--json"], ["export", "--out", "best.json"]):
            outs.append(
                subprocess.run(
                    [BIN / "hpo-trainer", *args, "--storage", url, "--study-name", name], **run
                )
            )
            assert outs[-1].returncode == 0, outs[-1].stderr
        for out in outs:
            assert SECRET not in out.stdout + out.stderr
        record = json.loads((tmp_path / "best.json").read_text())
        assert "***" in record["storage"]
        study = optuna.load_study(study_name=name, storage=url)
        dumped = json.dumps(
            [study.user_attrs] + [[t.user_attrs, t.system_attrs] for t in study.trials],
            default=str,
        )
        assert SECRET not in dumped
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
    finally:
        optuna.delete_study(study_name=name, storage=url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://alice:pw@db:5432/hpo",
            "postgresql+psycopg://alice:***@db:5432/hpo",
        ),
        ("sqlite:///runs/studies.db", "sqlite:///runs/studies.db"),
    ],
)
def test_mask_url(url, shown):
    assert mask_url(url) == shown


def test_dashboard_warns_when_bound_to_all_interfaces(tmp_path):
    subprocess.run(
        [BIN / "hpo-trainer", "search", STUDY, "--trials", "1", "--epochs", "1"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    port = 19000 + os.getpid() % 1000
    proc = subprocess.Popen(
        [BIN / "hpo-trainer", "dashboard", "--host", "0.0.0.0", "--port", str(port)],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(4)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "anyone who can reach it can read and change the study" in err


def test_readme_says_a_study_file_is_code():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "A study file is code" in readme
