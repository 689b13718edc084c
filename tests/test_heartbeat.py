"""Re-queue of a dead worker's trial: the one retry mechanism (``Requeue``), the trials that
never sent a heartbeat (``fail_silent_trials``) and the first attempt of a retry
(``root_number``). Real Optuna studies, in memory or in a SQLite file."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from hpo_trainer.search.heartbeat import Heartbeat, Requeue, fail_silent_trials, root_number
from hpo_trainer.search.storage import open_storage

VALUES = {1: 0.9, 2: 0.7, 3: 0.65}


def _attempt(study: optuna.Study, values=VALUES, worker="w0") -> optuna.trial.FrozenTrial:
    """Run one attempt as a worker would until it dies: suggest, report, set attrs; FAIL."""
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.suggest_int("hidden", 16, 256, step=16)
    trial.suggest_categorical("optimizer", ["SGD", "Adam"])
    for step, value in values.items():
        if step not in study._storage.get_trial(trial._trial_id).intermediate_values:
            trial.report(value, step)
    trial.set_user_attr("worker", worker)
    study.tell(trial, state=TrialState.FAIL)
    return study.trials[trial.number]


def _waiting(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.WAITING,))


def test_the_waiting_copy_has_the_first_attempts_params_values_and_history():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    first = _attempt(study)
    Requeue(max_retry=3)(study, first)
    (copy,) = _waiting(study)
    assert copy.params == first.params
    assert copy.distributions == first.distributions
    assert copy.intermediate_values == VALUES
    assert copy.system_attrs["failed_trial"] == first.number
    assert copy.system_attrs["retry_history"] == [first.number]
    # the failed attempt's worker and host are its own, not the retry's
    assert "worker" not in copy.user_attrs
    assert root_number(copy) == first.number
    assert root_number(first) == first.number


def test_a_retry_is_asked_with_the_same_params():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    first = _attempt(study)
    Requeue()(study, first)
    retry = _attempt(study, worker="w1")
    assert retry.number == first.number + 1
    assert retry.params == first.params
    assert retry.user_attrs == {"worker": "w1"}


@pytest.mark.parametrize(
    ("max_retry", "attempts"),
    [(0, 1), (1, 2), (3, 4), (None, 6)],
    ids=["never", "once", "three-times", "unlimited"],
)
def test_retries_chain_to_the_first_attempt_until_max_retry(max_retry, attempts, tmp_path):
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path}/s.db", sampler=optuna.samplers.RandomSampler(seed=3)
    )
    requeue = Requeue(max_retry=max_retry)
    tried = []
    for n in range(6):
        trial = _attempt(study, values={**VALUES, 4 + n: 0.6 - n / 100})
        tried.append(trial)
        requeue(study, trial)
        if not _waiting(study):
            break
    assert len(tried) == attempts
    if max_retry is not None:
        assert not _waiting(study), "a trial was re-queued after max_retry"
    root = tried[0].number
    for n, trial in enumerate(tried):
        assert root_number(trial) == root
        assert trial.params == tried[0].params
        if n:
            assert trial.system_attrs["failed_trial"] == root
            assert trial.system_attrs["retry_history"] == [t.number for t in tried[:n]]
            # each attempt carries every epoch of the attempts before it
            assert set(tried[n - 1].intermediate_values) <= set(trial.intermediate_values)


def test_a_trial_that_never_sent_a_heartbeat_is_failed_and_requeued(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    storage = open_storage(url, heartbeat_interval=1, grace_period=2, max_retry=2)
    study = optuna.create_study(storage=storage, study_name="silent")
    storage.record_heartbeat(study.ask()._trial_id)  # a live trial of another worker
    trial = study.ask()  # its worker dies before the first beat
    trial.suggest_float("x", 0.0, 1.0)
    trial.report(0.5, 1)
    fail_silent_trials(study, storage, older_than=3600)
    assert study.trials[1].state == TrialState.RUNNING, "a young trial was failed"
    fail_silent_trials(study, storage, older_than=0)
    states = [t.state for t in study.trials]
    assert states == [TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING]
    copy = study.trials[2]
    assert copy.params == study.trials[1].params and copy.intermediate_values == {1: 0.5}
    assert root_number(copy) == 1


def test_a_stale_heartbeat_fails_the_trial_and_requeues_it(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    storage = open_storage(url, heartbeat_interval=1, grace_period=1, max_retry=2)
    study = optuna.create_study(storage=storage, study_name="stale")
    trial = study.ask()
    trial.suggest_int("n", 1, 9)
    with Heartbeat(storage, trial._trial_id, interval=1):
        pass  # beats once, then its worker "dies"
    time.sleep(2.2)
    optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    assert study.trials[1].params == study.trials[0].params
    assert study.trials[1].system_attrs["failed_trial"] == 0


def test_a_live_heartbeat_keeps_the_trial_running(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name="alive")
    trial = study.ask()
    with Heartbeat(storage, trial._trial_id, interval=0.5):
        time.sleep(2.5)
        optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
