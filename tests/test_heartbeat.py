"""Heartbeats and re-queue of a dead worker's trial: the one retry mechanism (``Requeue``), the
first attempt of a retry (``root_number``), and how dead trials are found on every storage
(``Heartbeat`` counts, ``HeartbeatWatch`` judges by its own clock). Real Optuna studies, in
memory, in a journal file or in a SQLite file; the watcher's clock is the test's, so nothing
here waits for a grace period to pass."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from hpo_trainer.search.heartbeat import (
    BEAT_KEY,
    GRACE_KEY,
    Heartbeat,
    HeartbeatWatch,
    Requeue,
    beat,
    root_number,
)
from hpo_trainer.search.storage import open_storage

pytestmark = pytest.mark.fast

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


class Clock:
    """A watcher's monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _study(tmp_path, kind: str, name: str = "beats"):
    """A study on a journal file or a SQLite file, opened as a worker opens it."""
    url = f"journal:{tmp_path}/study.log" if kind == "journal" else f"sqlite:///{tmp_path}/s.db"
    storage = open_storage(url)
    return optuna.create_study(study_name=name, storage=storage), storage


def _start(study, storage, grace_period=2) -> optuna.Trial:
    """Start a trial as a worker does under the budget lock: ask, then mark it alive."""
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.report(0.5, 1)
    beat(storage, trial._trial_id, grace_period)
    return trial


def _states(trials: list[optuna.trial.FrozenTrial]) -> list[TrialState]:
    return [t.state for t in trials]


def _beats(storage, trial) -> int | None:
    return storage.get_trial(trial._trial_id).system_attrs.get(BEAT_KEY)


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_trial_whose_heartbeat_stops_is_failed_after_its_grace_period_and_requeued(
    tmp_path, kind
):
    study, storage = _study(tmp_path, kind)
    trial = _start(study, storage)
    with Heartbeat(storage, trial._trial_id, interval=3600):
        pass  # beats once, then its worker dies
    clock = Clock()
    watch = HeartbeatWatch(storage, grace_period=2, clock=clock)
    watch.read(study)
    clock.now += 2.0
    assert _states(watch.read(study)) == [TrialState.RUNNING], "failed within its grace period"
    clock.now += 0.1
    trials = watch.read(study)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    first, copy = trials
    assert "failure" not in first.user_attrs  # a dead worker is not a failure of the trial
    assert copy.params == first.params and copy.intermediate_values == {1: 0.5}
    assert root_number(copy) == first.number
    # the retry beats for itself: nothing of the dead attempt's heartbeat is carried over
    assert BEAT_KEY not in copy.system_attrs and GRACE_KEY not in copy.system_attrs


def test_a_live_trial_whose_heartbeat_keeps_coming_is_never_failed(tmp_path):
    """However far the watcher's clock moves between two reads (a busy worker, another
    machine's clock), a count that advanced means the trial is alive."""
    study, storage = _study(tmp_path, "journal")
    trial = _start(study, storage)
    clock = Clock()
    watch = HeartbeatWatch(storage, grace_period=2, clock=clock)
    reads = []

    def an_hour_between_beats(interval):  # the heartbeat thread's wait before each beat
        reads.append((_beats(storage, trial), _states(watch.read(study))))
        if len(reads) == 6:
            return True  # its worker dies: no more beats
        clock.now += 3600
        return False

    with Heartbeat(storage, trial._trial_id, interval=5, wait=an_hour_between_beats):
        pass  # the thread beats until its wait says stop, and the block waits for it
    assert reads == [(n, [TrialState.RUNNING]) for n in range(1, 7)]
    # the same watch fails it once the beats stop for longer than the grace period
    clock.now += 2
    assert _states(watch.read(study)) == [TrialState.RUNNING]
    clock.now += 0.5
    assert _states(watch.read(study)) == [TrialState.FAIL, TrialState.WAITING]


def test_the_heartbeat_beats_on_entering_and_after_each_wait_of_its_interval(tmp_path):
    study, storage = _study(tmp_path, "sqlite")
    trial = _start(study, storage)
    waits = []

    def wait(interval):
        waits.append((interval, _beats(storage, trial)))
        return len(waits) == 3  # the block ended

    with Heartbeat(storage, trial._trial_id, interval=5, wait=wait):
        pass
    assert waits == [(5, 1), (5, 2), (5, 3)] and _beats(storage, trial) == 3
    with Heartbeat(storage, trial._trial_id, interval=None, wait=wait):
        pass  # no interval: no heartbeat at all
    assert len(waits) == 3 and _beats(storage, trial) == 3


def test_the_heartbeat_stops_by_itself_once_its_trial_is_told(tmp_path):
    study, storage = _study(tmp_path, "journal")
    trial = _start(study, storage)
    waits = []

    def wait(interval):
        waits.append(_beats(storage, trial))
        if len(waits) == 2:
            study.tell(trial, 0.5)  # told between two beats
        return len(waits) == 10  # it would go on; the heartbeat must stop first

    with Heartbeat(storage, trial._trial_id, interval=5, wait=wait):
        pass
    assert waits == [1, 2], "the heartbeat went on beating for a finished trial"
    assert storage.get_trial(trial._trial_id).state == TrialState.COMPLETE


def test_a_fresh_watch_never_fails_a_trial_on_its_first_read(tmp_path):
    study, storage = _study(tmp_path, "sqlite")
    _start(study, storage)
    clock = Clock()
    clock.now = 1e9  # a worker that starts long after the trial's last beat
    assert _states(HeartbeatWatch(storage, 2, clock=clock).read(study)) == [TrialState.RUNNING]


def test_a_trial_started_with_a_longer_grace_period_is_judged_by_its_own(tmp_path):
    study, storage = _study(tmp_path, "journal")
    _start(study, storage, grace_period=60)  # its worker was started with a slow heartbeat
    clock = Clock()
    watch = HeartbeatWatch(storage, grace_period=2, clock=clock)
    watch.read(study)
    clock.now += 59
    assert _states(watch.read(study)) == [TrialState.RUNNING]
    clock.now += 2
    assert _states(watch.read(study)) == [TrialState.FAIL, TrialState.WAITING]


def test_a_trial_that_never_showed_a_sign_of_life_gets_three_grace_periods(tmp_path):
    study, storage = _study(tmp_path, "journal")
    study.ask().suggest_int("n", 1, 9)  # its worker died before marking it started
    clock = Clock()
    watch = HeartbeatWatch(storage, grace_period=2, clock=clock)
    watch.read(study)
    clock.now += 6
    assert _states(watch.read(study)) == [TrialState.RUNNING]
    clock.now += 0.1
    assert _states(watch.read(study)) == [TrialState.FAIL, TrialState.WAITING]


class _ReadBefore:
    """A study whose trials were read before another worker changed them."""

    def __init__(self, study: optuna.Study) -> None:
        self._study, self._trials = study, study.get_trials()

    def get_trials(self, deepcopy: bool = True) -> list[optuna.trial.FrozenTrial]:
        return self._trials

    def __getattr__(self, name: str):
        return getattr(self._study, name)


def test_two_workers_that_find_the_same_dead_trial_queue_it_once(tmp_path):
    """Two processes' views of one journal file: the second to fail the trial backs off."""
    study, storage = _study(tmp_path, "journal")
    _start(study, storage)
    other_storage = open_storage(f"journal:{tmp_path}/study.log")
    other = optuna.load_study(study_name="beats", storage=other_storage)
    clock = Clock()
    mine = HeartbeatWatch(storage, 2, clock=clock)
    theirs = HeartbeatWatch(other_storage, 2, clock=clock)
    mine.read(study), theirs.read(other)
    clock.now += 3
    stale = _ReadBefore(other)  # read before this worker failed the trial
    mine.read(study)
    theirs.read(stale)
    assert _states(other.get_trials()) == [TrialState.FAIL, TrialState.WAITING]
