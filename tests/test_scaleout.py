"""Storages beyond the embedded SQLite file: PostgreSQL, journal files, Redis; migrating
studies; GPU slots. PostgreSQL and Redis are the real servers on this machine.

In CI (`.ci/run` sets HPO_TRAINER_POSTGRES_URL and HPO_TRAINER_REDIS_URL) these tests fail
when a server is unreachable; elsewhere, without those variables, they try the local
defaults and skip only if nothing answers.
"""

import json
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from scenarios import FINISHED, check_resumed, kill_mid_trial_then_resume

from hpo_trainer import ConfigError, StorageError
from hpo_trainer.search.migrate import migrate
from hpo_trainer.search.storage import open_storage

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "digits_mlp.py"


@pytest.fixture
def study_name(request):
    """A study name no other test (or earlier run) uses; cleaned up afterwards."""
    name = f"t-{request.node.name[:30]}-{uuid.uuid4().hex[:8]}"
    yield name
    for url in request.node.cleanup_urls if hasattr(request.node, "cleanup_urls") else []:
        try:
            optuna.delete_study(study_name=name, storage=url)
        except KeyError:
            pass


def _cleanup(request, url):
    request.node.cleanup_urls = [*getattr(request.node, "cleanup_urls", []), url]


def _counts(url, name):
    study = optuna.load_study(study_name=name, storage=url)
    return Counter(t.state for t in study.trials), study


def test_postgres_workers_reach_exactly_the_budget(make_trainer, pg_url, study_name, request):
    _cleanup(request, pg_url)
    tr = make_trainer()
    tr.hyp_opt(epochs=2, iters=9, n_workers=3, storage=pg_url, study_name=study_name, seed=0)
    states, study = _counts(pg_url, study_name)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 9
    assert states[TrialState.RUNNING] == 0
    assert {t.user_attrs["worker"] for t in study.trials} == {0, 1, 2}


def test_postgres_killed_worker_is_retried_from_its_checkpoint(
    pg_url, study_name, request, tmp_path
):
    _cleanup(request, pg_url)
    killed_at = kill_mid_trial_then_resume(pg_url, tmp_path / "runs", study_name)
    check_resumed(pg_url, study_name, killed_at)


def test_status_and_export_read_a_postgres_study(
    make_trainer, pg_url, study_name, request, tmp_path
):
    _cleanup(request, pg_url)
    make_trainer().hyp_opt(epochs=2, iters=3, storage=pg_url, study_name=study_name, seed=0)
    run = dict(cwd=tmp_path, capture_output=True, text=True, check=True)
    status = json.loads(
        subprocess.run(
            [
                BIN / "hpo-trainer",
                "status",
                "--storage",
                pg_url,
                "--study-name",
                study_name,
                "--json",
            ],
            **run,
        ).stdout
    )
    assert status[0]["study"] == study_name and status[0]["trials"] == 3
    subprocess.run(
        [
            BIN / "hpo-trainer",
            "export",
            "--storage",
            pg_url,
            "--study-name",
            study_name,
            "--out",
            "best.json",
        ],
        **run,
    )
    record = json.loads((tmp_path / "best.json").read_text())
    assert record["study"] == study_name and record["storage"].startswith("postgresql+psycopg")


def test_unreachable_database_names_the_fix_and_hides_the_password():
    with pytest.raises(StorageError) as err:
        open_storage("postgresql+psycopg://alice:s3cret@127.0.0.1:1/hpo")
    msg = str(err.value)
    assert "s3cret" not in msg and "alice:***@127.0.0.1:1" in msg
    assert "Check that the server is running" in msg


def test_postgres_url_without_its_driver():
    with pytest.raises(StorageError, match=r"driver .* is not installed.*postgresql\+psycopg"):
        open_storage("postgresql+psycopg2://alice:s3cret@127.0.0.1:5432/hpo")


def test_migrate_sqlite_to_postgres_keeps_everything(
    make_trainer, pg_url, study_name, request, tmp_path
):
    _cleanup(request, pg_url)
    src = f"sqlite:///{tmp_path}/local.db"
    make_trainer().hyp_opt(epochs=3, iters=4, storage=src, study_name=study_name, seed=0)
    assert migrate(src, pg_url, study_name=study_name) == {study_name: 4}
    a = optuna.load_study(study_name=study_name, storage=src)
    b = optuna.load_study(study_name=study_name, storage=pg_url)
    for ta, tb in zip(a.trials, b.trials, strict=True):
        assert (ta.state, ta.value, ta.params) == (tb.state, tb.value, tb.params)
        assert ta.intermediate_values == tb.intermediate_values
        assert ta.user_attrs == tb.user_attrs
    assert b.user_attrs == a.user_attrs and b.metric_names == ["val/loss"]
    # an existing study is never overwritten silently; nothing changes
    with pytest.raises(ConfigError, match="already exist.*--overwrite"):
        migrate(src, pg_url, study_name=study_name)
    assert len(optuna.load_study(study_name=study_name, storage=pg_url).trials) == 4
    with pytest.raises(ConfigError, match="no study named 'nope'"):
        migrate(src, pg_url, study_name="nope")
    assert migrate(src, pg_url, study_name=study_name, overwrite=True) == {study_name: 4}


def test_migrate_from_the_command_line(make_trainer, tmp_path):
    src, dst = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    make_trainer().hyp_opt(epochs=1, iters=2, storage=src, seed=0)
    cmd = [BIN / "hpo-trainer", "migrate", "--from", src, "--to", dst]
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path)
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 1 and "already exist" in again.stderr
    assert "Traceback" not in again.stderr


def test_journal_file_storage_shares_a_study(make_trainer, tmp_path):
    url = f"journal:{tmp_path}/study.log"
    study = make_trainer().hyp_opt(epochs=2, iters=6, n_workers=2, storage=url, seed=0)
    assert sum(t.state in FINISHED for t in study.trials) == 6
    assert (tmp_path / "study.log").stat().st_size > 0


def test_redis_journal_shares_a_study(make_trainer, redis_url, study_name):
    study = make_trainer().hyp_opt(
        epochs=2, iters=6, n_workers=2, storage=redis_url, study_name=study_name, seed=0
    )
    assert sum(t.state in FINISHED for t in study.trials) == 6
    optuna.delete_study(study_name=study_name, storage=open_storage(redis_url))


def test_gpu_slots_give_each_worker_its_device(tmp_path):
    """No GPU here: check the environment each worker got, as recorded on its trials."""
    proc = subprocess.run(
        [
            BIN / "hpo-trainer",
            "search",
            STUDY,
            "--trials",
            "8",
            "--epochs",
            "1",
            "--devices",
            "0,1",
            "--workers-per-device",
            "2",
            "--seed",
            "0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(
        study_name="digits_mlp", storage=f"sqlite:///{tmp_path}/runs/studies.db"
    )
    seen = {(t.user_attrs["worker"], t.user_attrs["cuda_visible_devices"]) for t in study.trials}
    assert seen <= {(0, "0"), (1, "0"), (2, "1"), (3, "1")}
    assert {d for _, d in seen} == {"0", "1"}


def test_bad_device_list_is_a_usage_error(tmp_path):
    proc = subprocess.run(
        [BIN / "hpo-trainer", "search", STUDY, "--devices", "0,zero"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "distinct GPU ids" in proc.stderr


def test_migrate_from_a_missing_file_or_an_empty_storage_writes_nothing(tmp_path):
    with pytest.raises(StorageError, match="no study storage at .*missing.db"):
        migrate(f"sqlite:///{tmp_path}/missing.db", f"sqlite:///{tmp_path}/b.db")
    open_storage(f"sqlite:///{tmp_path}/empty.db")  # a storage with no study in it
    with pytest.raises(ConfigError, match="holds no study; nothing to copy"):
        migrate(f"sqlite:///{tmp_path}/empty.db", f"sqlite:///{tmp_path}/b.db")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("missing", "b.db"))]
