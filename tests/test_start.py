"""The trial-start path: the budget decided under the lock, the sampler run outside it, and an
exact budget from reads that do not grow with the study. Real SQLite files and journal files,
workers as threads each with their own storage (as separate processes would have)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from hpo_trainer.search import optuna_api
from hpo_trainer.search.heartbeat import GRACE_KEY, HeartbeatWatch
from hpo_trainer.search.start import TrialStarter
from hpo_trainer.search.storage import open_storage

pytestmark = pytest.mark.fast
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class _BlockingSampler(optuna.samplers.RandomSampler):
    """A sampler that, for its first trial, waits in ``before_trial`` until ``release`` is set."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__(seed=0)
        self.release, self.entered, self.waited = release, threading.Event(), None

    def before_trial(self, study, trial):
        if not self.entered.is_set():
            self.entered.set()
            self.waited = self.release.wait(timeout=20)
        super().before_trial(study, trial)


def _starter(url, name, n_trials, sampler=None, *, watch=False, max_failures=100):
    storage = open_storage(url)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    return study, TrialStarter(
        study,
        storage,
        url,
        n_trials=n_trials,
        max_failures=max_failures,
        watch=HeartbeatWatch(storage, 30) if watch else None,
        grace_period=30 if watch else None,
    )


def test_another_worker_starts_a_trial_while_a_sampler_runs(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    optuna.create_study(study_name="s", storage=open_storage(url))
    release = threading.Event()
    slow_sampler = _BlockingSampler(release)
    slow_study, slow = _starter(url, "s", 2, slow_sampler, watch=True)
    _, fast = _starter(url, "s", 2, watch=True)
    got = {}
    thread = threading.Thread(target=lambda: got.setdefault("slow", slow.next()))
    thread.start()
    assert slow_sampler.entered.wait(timeout=20)  # its sampler runs, its trial is RUNNING
    started = time.monotonic()
    other = fast.next()  # would wait for the lock if the sampler ran under it
    waited_for_lock = time.monotonic() - started
    release.set()
    thread.join(timeout=30)
    assert other.trial is not None and waited_for_lock < 10, waited_for_lock
    assert slow_sampler.waited is True  # released by the test, not by its timeout
    mine = got["slow"].trial
    assert {mine.number, other.trial.number} == {0, 1}
    mine.suggest_float("x", 0.0, 1.0)  # Optuna's cache knows the trial it did not ask for
    slow_study.tell(mine, 1.0)
    # both slots are taken: a third look finds no room
    assert fast.next() == (None, None, 1)


def _drive(url, name, n_trials, workers):
    """Run ``workers`` threads that start trials and tell them at once, until the budget."""
    errors = []

    def work(i):
        try:
            study, starter = _starter(url, name, n_trials, optuna.samplers.RandomSampler(i))
            while (start := starter.next()).stop is None:
                if start.trial is None:
                    time.sleep(0.01)
                    continue
                study.tell(start.trial, start.trial.suggest_float("x", 0.0, 1.0))
        except Exception as exc:  # reported below; the thread prints its traceback
            errors.append(exc)
            raise

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return optuna.load_study(study_name=name, storage=open_storage(url))


@pytest.mark.parametrize(
    "kind",
    [
        "sqlite",
        "journal",
        pytest.param("postgresql", marks=pytest.mark.slow),
        pytest.param("redis", marks=pytest.mark.slow),
    ],
)
def test_threads_reach_exactly_the_budget_and_take_queued_trials_first(tmp_path, kind, request):
    files = {"sqlite": f"sqlite:///{tmp_path}/study.db", "journal": f"journal:{tmp_path}/j.log"}
    servers = {"postgresql": "pg_url", "redis": "redis_url"}
    url = files[kind] if kind in files else request.getfixturevalue(servers[kind])
    name = f"start-exact-{uuid.uuid4().hex[:10]}"
    study = optuna.create_study(study_name=name, storage=open_storage(url))
    request.addfinalizer(lambda: optuna.delete_study(study_name=name, storage=open_storage(url)))
    for x in (0.1, 0.2, 0.3):  # a warm start: queued trials count like any other
        study.enqueue_trial({"x": x})
    study = _drive(url, name, 24, workers=6)
    trials = study.get_trials(deepcopy=False)
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 24}
    assert sorted(t.number for t in trials) == list(range(24))  # no number twice, none missed
    assert [t.params["x"] for t in trials[:3]] == [0.1, 0.2, 0.3]


def test_failures_stop_the_workers_and_dead_trials_are_queued_again(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(study_name="f", storage=open_storage(url))
    dead = study.ask()  # started by a worker that died before it recorded any sign of life
    dead.suggest_float("x", 0.0, 1.0)
    for _ in range(2):  # failed by their own code
        crashed = study.ask()
        crashed.set_user_attr("failure", "ValueError: no")
        study.tell(crashed, state=TrialState.FAIL)
    clock = [0.0]
    storage = open_storage(url)
    mine = optuna.load_study(study_name="f", storage=storage)
    watch = HeartbeatWatch(storage, 1.0, clock=lambda: clock[0])
    starter = TrialStarter(mine, storage, url, n_trials=5, max_failures=3, watch=watch)
    first = starter.next()
    assert first.running == 1 and first.trial.number == 3  # the silent one still has time
    assert GRACE_KEY in mine.trials[3].system_attrs  # its start mark, under the lock
    clock[0] = 10.0  # no beat of trial 0 for more than three grace periods: queued again
    retry = starter.next().trial  # the queued copy of trial 0, taken at once
    assert retry.number == 4 and retry.suggest_float("x", 0.0, 1.0) == dead.params["x"]
    assert mine.trials[0].state == TrialState.FAIL
    mine.tell(retry, state=TrialState.FAIL)  # not counted: no 'failure' attribute
    crashed = starter.next().trial
    assert crashed.number == 5
    crashed.set_user_attr("failure", "ValueError: again")
    mine.tell(crashed, state=TrialState.FAIL)
    assert starter.next().stop == "failures"


def _looks_under_the_lock(tmp_path, size, monkeypatch):
    """Start and tell three trials in a study of ``size`` finished trials; return the trials
    each look read under the lock and the statements run there."""
    from sqlalchemy import event

    url = f"sqlite:///{tmp_path}/s{size}.db"
    study = optuna.create_study(study_name="r", storage=open_storage(url))
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    done = optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=1.0)
    study.add_trials([done] * size)
    storage = open_storage(url)
    mine = optuna.load_study(study_name="r", storage=storage)
    starter = TrialStarter(mine, storage, url, n_trials=size + 3, max_failures=9)
    starter.catch_up()  # the one full read, before the lock
    under, reads, statements = [False], [], [0]
    read = optuna_api.read_trials_since

    def counted(*args, **kwargs):
        trials = read(*args, **kwargs)
        if under[0]:
            reads.append(len(trials))
        return trials

    monkeypatch.setattr(optuna_api, "read_trials_since", counted)
    event.listen(
        storage.engine,
        "before_cursor_execute",
        lambda *a: statements.__setitem__(0, statements[0] + under[0]),
    )
    lock = starter.lock

    class Marked:
        def __enter__(self):
            lock.__enter__()
            under[0] = True

        def __exit__(self, *exc):
            under[0] = False
            return lock.__exit__(*exc)

    starter.lock = Marked()
    for _ in range(3):
        mine.tell(starter.next().trial, 1.0)
    monkeypatch.undo()
    return reads, statements[0]


def test_a_look_under_the_lock_reads_only_new_and_unfinished_trials(tmp_path, monkeypatch):
    small = _looks_under_the_lock(tmp_path, 20, monkeypatch)
    large = _looks_under_the_lock(tmp_path, 400, monkeypatch)
    # the first look finds nothing new; the next ones the trial told since
    assert small == large and small[0] == [0, 1, 1], (small, large)
