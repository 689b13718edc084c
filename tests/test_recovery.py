"""Dead workers' trials are found and retried on every storage, by one heartbeat of our own.

SQLite (``test_search``) and PostgreSQL (``test_scaleout``) run the same scenario as the
journal file and Redis here (:mod:`scenarios`): a worker is SIGKILLed mid-trial, the same
search runs again, and the dead trial resumes from its checkpoint while the study finishes
its budget. Also: an idle worker looks at the study less and less often, never fails a
trial whose heartbeat keeps coming, and retries it once the heartbeat stops.

Redis runs on a database of its own (:func:`redis_db`), emptied afterwards: Optuna's Redis
journal keeps every study of a database in one log, which every later test would replay.
"""

from __future__ import annotations

import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import optuna
import pytest
from optuna.trial import TrialState
from scenarios import FINISHED, check_resumed, kill_mid_trial_then_resume

from hpo_trainer.search.config import make_config
from hpo_trainer.search.heartbeat import Heartbeat, HeartbeatWatch, beat
from hpo_trainer.search.storage import open_storage
from hpo_trainer.search.study import create_study
from hpo_trainer.search.worker import run_worker

#: Marks a Redis database as these tests' scratch space: a run that died left it dirty.
_SCRATCH = "hpo-trainer-test:scratch"
#: Held (with an expiry) by the test using a scratch database.
_CLAIM = "hpo-trainer-test:claim"


@pytest.fixture
def redis_db(redis_url):
    """A Redis URL on an otherwise empty database (1-15) claimed for this test."""
    import redis

    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss"):
        pytest.fail(f"the Redis tests need a redis:// URL to pick a database, got {redis_url}")
    token = uuid.uuid4().hex
    for db in range(15, 0, -1):
        url = urlunsplit(parts._replace(path=f"/{db}"))
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        if not client.set(_CLAIM, token, nx=True, ex=1800):
            continue  # another test run holds it
        if client.dbsize() == 1 or client.exists(_SCRATCH):
            break
        client.delete(_CLAIM)  # someone else's data: leave it alone
    else:
        pytest.fail(f"no free Redis database (1-15) on {redis_url} for the Redis tests")
    _wipe(client)
    client.set(_SCRATCH, 1)
    try:
        yield url
    finally:
        _wipe(client)
        client.delete(_SCRATCH, _CLAIM)


def _wipe(client) -> None:
    """Delete what the tests write: the journal (``:log...``) and the budget lock."""
    for pattern in (":*", "hpo-trainer:*"):
        for key in client.scan_iter(match=pattern):
            client.delete(key)


def _check_recovered(url: str, study_name: str, killed_at: int) -> None:
    """The scenario's checks, and: nothing left running or queued, at most the epoch whose
    checkpoint was being written when the worker died is trained again."""
    check_resumed(url, study_name, killed_at)
    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    first = study.trials[0]
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 0)
    assert len(first.intermediate_values) - retry.user_attrs["resumed_from_epoch"] <= 1


def test_a_dead_workers_trial_resumes_from_its_checkpoint_on_a_journal_file(tmp_path):
    url = f"journal:{tmp_path}/study.log"
    killed_at = kill_mid_trial_then_resume(url, tmp_path / "runs", "tunable")
    _check_recovered(url, "tunable", killed_at)


def test_a_dead_workers_trial_resumes_from_its_checkpoint_on_redis(redis_db, tmp_path):
    name = f"killed-{uuid.uuid4().hex[:8]}"
    killed_at = kill_mid_trial_then_resume(redis_db, tmp_path / "runs", name)
    _check_recovered(redis_db, name, killed_at)


def test_an_idle_worker_backs_off_and_fails_a_trial_only_when_its_heartbeat_stops(
    make_trainer, tmp_path, monkeypatch
):
    """The budget is one trial, running in "another worker" (a heartbeat in this test) for
    3 s, longer than the grace period; then that worker dies. The idle worker must leave the
    live trial alone, look at the study a few times rather than every 0.1 s, and then retry
    the trial and finish the budget."""
    url = f"journal:{tmp_path}/study.log"
    task = make_trainer()
    cfg = make_config(
        task,
        epochs=1,
        n_trials=1,
        storage=url,
        study_name="idle",
        pruner="none",
        seed=0,
        heartbeat_interval=1,
        grace_period=2,
    )
    create_study(cfg)
    storage = open_storage(url)
    other = optuna.load_study(study_name="idle", storage=storage).ask()
    beat(storage, other._trial_id, cfg.durability.grace_period)
    alive_until: list[float] = []

    def other_worker() -> None:
        with Heartbeat(storage, other._trial_id, interval=0.2):
            time.sleep(3)
        alive_until.append(time.time())

    looks: list[float] = []
    check = HeartbeatWatch.check  # once a look, under the budget lock

    def counted(self, study, read):
        looks.append(time.monotonic())
        return check(self, study, read)

    monkeypatch.setattr(HeartbeatWatch, "check", counted)
    beating = threading.Thread(target=other_worker)
    beating.start()
    try:
        report = run_worker(task, cfg)
    finally:
        beating.join()
    study = optuna.load_study(study_name="idle", storage=storage)
    first, retry = study.trials
    assert report.stopped_by == "budget" and report.trials == 1
    assert first.state == TrialState.FAIL and "failure" not in first.user_attrs
    # failed after its heartbeat stopped, within the grace period and one wait
    assert alive_until[0] <= first.datetime_complete.timestamp() <= alive_until[0] + 2 + 1 + 1
    assert retry.user_attrs["retry_of"] == 0 and retry.state in FINISHED
    # about 5 s idle: waits of 0.1 s, 0.2 s, 0.4 s, 0.8 s, then one heartbeat interval
    # (1 s) between looks, where it used to look every 0.1 s
    # (the last look comes at once: the look before it failed the trial and queued its retry)
    gaps = [round(b - a, 2) for a, b in zip(looks, looks[1:])][:-1]
    assert min(gaps) >= 0.09 and min(gaps[4:]) >= 0.9, f"looks {gaps} s apart"
    assert len(looks) <= 12, f"{len(looks)} looks at the study"
