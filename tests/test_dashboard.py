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


N_TRIALS, KEEP = 4, 2


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A search by two worker processes on one SQLite study that keeps 2 checkpoints, then a
    final run on its best params: the artifacts of both go to ``artifacts/`` beside the file."""
    from hpo_trainer.apps.final import final_run
    from hpo_trainer.facade.studyfile import load_trainer_from_file

    tmp = tmp_path_factory.mktemp("dash")
    url = f"sqlite:///{tmp}/study.db"
    tr = load_trainer_from_file(
        Path(__file__).parents[1] / "studies" / "digits_mlp.py", runs_dir=tmp / "runs", quiet=True
    )
    study = tr.hyp_opt(
        epochs=2, iters=N_TRIALS, storage=url, seed=0, n_workers=2, keep_checkpoints=KEEP
    )
    best = study.best_trial
    final_run(
        tr,
        params=None,
        epochs=1,
        provenance={"study": "digits_mlp", "trial": best.number, "storage": url},
    )
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
    assert len(json.loads(out)) == N_TRIALS


def test_dashboard_api_lists_trials_and_their_intermediate_values(dashboard):
    with urllib.request.urlopen(f"{dashboard}/api/studies") as r:
        studies = json.load(r)["study_summaries"]
    assert [s["study_name"] for s in studies] == ["digits_mlp"]
    with urllib.request.urlopen(f"{dashboard}/api/studies/{studies[0]['study_id']}") as r:
        detail = json.load(r)
    assert len(detail["trials"]) == N_TRIALS
    assert all(t["intermediate_values"] for t in detail["trials"])
    assert detail["objective_names"] == ["val/loss"]


def _folder(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///")).parent


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url) as r:
        return r.read()


def test_dashboard_serves_the_kept_checkpoints_and_the_final_run(searched, dashboard):
    import optuna

    detail = json.loads(_get(f"{dashboard}/api/studies/1"))
    complete = sorted((t for t in detail["trials"] if t["state"] == "Complete"), key=_value)
    kept = complete[:KEEP]
    for t in detail["trials"]:  # the KEEP best carry their checkpoint; the others nothing
        names = [a["filename"] for a in t["artifacts"]]
        assert names == ([f"trial-{t['number']}-last.pt"] if t in kept else []), t["number"]
    folder = _folder(searched)
    for t in kept:  # downloaded through the dashboard: the trial's own last checkpoint
        art = t["artifacts"][0]
        got = _get(f"{dashboard}/artifacts/1/{t['trial_id']}/{art['artifact_id']}")
        assert (
            got
            == (folder / "runs" / "digits_mlp" / f"trial-{t['number']}" / "last.pt").read_bytes()
        )
    run_dir = next((folder / "runs").glob("digits_mlp-*"))
    by_name = {a["filename"]: a for a in detail["artifacts"]}
    assert set(by_name) == {
        f"{run_dir.name}-{n}" for n in ("summary.json", "model.pt", "model.pt2")
    }
    summary = _get(
        f"{dashboard}/artifacts/1/{by_name[f'{run_dir.name}-summary.json']['artifact_id']}"
    )
    assert json.loads(summary) == json.loads((run_dir / "summary.json").read_text())
    # the store holds those files and nothing else: freed trials' files left with them
    ids = {a["artifact_id"] for t in kept for a in t["artifacts"]} | {
        a["artifact_id"] for a in by_name.values()
    }
    assert {p.name for p in (folder / "artifacts").iterdir()} == ids
    # Optuna's own API lists the final run's files
    study = optuna.load_study(study_name="digits_mlp", storage=searched)
    assert {m.filename for m in optuna.artifacts.get_all_artifact_meta(study)} == set(by_name)


def _value(trial: dict) -> float:
    return trial["values"][0]


def _dom(chromium: str, url: str, profile: Path) -> str:
    return subprocess.run(
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
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


def test_study_page_shows_the_trials_in_a_browser(chromium, dashboard, tmp_path):
    detail = json.loads(_get(f"{dashboard}/api/studies/1"))
    best = min((t for t in detail["trials"] if t["state"] == "Complete"), key=_value)
    dom = _dom(
        chromium,
        f"{dashboard}/dashboard/studies/1/trials?numbers={best['number']}",
        tmp_path / "profile",
    )
    assert "digits_mlp" in dom
    for n in range(N_TRIALS):
        assert f"Trial {n}" in dom
    # the selected best trial offers its checkpoint for download
    art = best["artifacts"][0]
    assert f"trial-{best['number']}-last.pt" in dom
    assert f"/artifacts/1/{best['trial_id']}/{art['artifact_id']}" in dom


def test_study_page_offers_the_final_run_for_download_in_a_browser(chromium, dashboard, tmp_path):
    dom = _dom(chromium, f"{dashboard}/dashboard/studies/1", tmp_path / "profile")
    assert "Study Artifacts" in dom
    detail = json.loads(_get(f"{dashboard}/api/studies/1"))
    for art in detail["artifacts"]:
        assert art["filename"] in dom and f'href="/artifacts/1/{art["artifact_id"]}"' in dom
