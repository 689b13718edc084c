"""Real clients on what we write: the optuna command line, optuna-dashboard's API, and the
dashboard's study page as a person sees it in headless Chromium (the ``chromium`` fixture in
conftest.py: required in CI, skipped without a browser elsewhere)."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    from hpo_trainer.studyfile import load_trainer_from_file

    tmp = tmp_path_factory.mktemp("dash")
    url = f"sqlite:///{tmp}/study.db"
    tr = load_trainer_from_file(
        Path(__file__).parents[1] / "studies" / "digits_mlp.py", runs_dir=tmp / "runs", quiet=True
    )
    tr.hyp_opt(epochs=2, iters=3, storage=url, seed=0)
    return url


@pytest.fixture(scope="module")
def dashboard(searched):
    port = 18000 + os.getpid() % 1000
    proc = subprocess.Popen(
        [BIN / "hpo-trainer", "dashboard", "--storage", searched, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                with urllib.request.urlopen(f"{base}/api/studies") as r:
                    r.read()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("hpo-trainer dashboard did not answer on loopback")
        yield base
    finally:
        proc.terminate()
        proc.wait()


def test_optuna_cli_reads_the_study(searched):
    out = subprocess.run(
        [
            BIN / "optuna",
            "trials",
            "--study-name",
            "digits_mlp",
            "--storage",
            searched,
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert len(json.loads(out)) == 3


def test_dashboard_api_lists_trials_and_their_intermediate_values(dashboard):
    with urllib.request.urlopen(f"{dashboard}/api/studies") as r:
        studies = json.load(r)["study_summaries"]
    assert [s["study_name"] for s in studies] == ["digits_mlp"]
    with urllib.request.urlopen(f"{dashboard}/api/studies/{studies[0]['study_id']}") as r:
        detail = json.load(r)
    assert len(detail["trials"]) == 3
    assert all(t["intermediate_values"] for t in detail["trials"])
    assert detail["objective_names"] == ["val/loss"]


def test_study_page_shows_the_trials_in_a_browser(chromium, dashboard, tmp_path):
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"{dashboard}/dashboard/studies/1/trials",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "digits_mlp" in dom
    for n in range(3):
        assert f"Trial {n}" in dom
