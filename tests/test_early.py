"""Workers started early (``hpo_trainer.search.early``): handed the configuration once the
study exists, cancelled quietly when the search is refused or needs other workers."""

import signal
import time
from pathlib import Path

from scenarios import hpo

from hpo_trainer.facade.studyfile import load_trainer_from_file
from hpo_trainer.search import search
from hpo_trainer.search.early import EarlyWorkers

BUILD = "hpo_trainer.facade.studyfile:load_trainer_from_file"
DIGITS = str(Path(__file__).resolve().parents[1] / "studies" / "digits_mlp.py")


def test_early_workers_run_the_search_they_are_handed(tmp_path):
    options = {"runs_dir": str(tmp_path / "runs"), "quiet": True}
    with EarlyWorkers(BUILD, (DIGITS,), options, 2) as early:
        trainer = load_trainer_from_file(DIGITS, **options)
        outcome = search(trainer, epochs=1, n_trials=4, n_workers=2, pruner="none", early=early)
    assert outcome.complete and outcome.finished == 4 and outcome.dead_workers == ()
    # both early processes ran trials (each trial records the worker that ran it)
    assert {t.user_attrs["worker"] for t in outcome.study.trials} == {0, 1}
    assert all(p.exitcode == 0 for p in early.procs)


def test_early_workers_that_do_not_fit_are_cancelled_and_others_spawned(tmp_path):
    options = {"runs_dir": str(tmp_path / "runs"), "quiet": True}
    with EarlyWorkers(BUILD, (DIGITS,), options, 3) as early:
        trainer = load_trainer_from_file(DIGITS, **options)
        outcome = search(trainer, epochs=1, n_trials=2, n_workers=2, pruner="none", early=early)
    assert outcome.complete and outcome.finished == 2
    assert [p.exitcode for p in early.procs] == [0, 0, 0]  # cancelled: exited doing nothing


def test_a_refused_search_cancels_its_early_workers_quietly(tmp_path):
    began = time.monotonic()
    proc = hpo(
        "search", DIGITS, "--workers", "2", "--trials", "2", "--sampler", "nope",
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "unknown sampler 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr and "[worker" not in proc.stderr
    assert not (tmp_path / "runs" / "studies.db").exists()
    assert time.monotonic() - began < 60  # nobody waits on a worker that never gets work


def test_a_signal_from_an_earlier_search_does_not_stop_the_next(tmp_path):
    import signal

    from hpo_trainer.train.interrupt import FLAG

    FLAG.signum = signal.SIGINT  # as a Ctrl-C in a notebook leaves it
    trainer = load_trainer_from_file(DIGITS, runs_dir=str(tmp_path / "runs"), quiet=True)
    outcome = search(trainer, epochs=1, n_trials=2, pruner="none")
    assert outcome.complete and outcome.finished == 2 and FLAG.signum is None


def test_cancel_terminates_a_worker_that_does_not_exit_in_time():
    # A worker whose task never finishes building (a study file that hangs at import).
    with EarlyWorkers("time:sleep", (600,), {}, 1) as early:
        began = time.monotonic()
        early.cancel(grace=0.5)
        waited = time.monotonic() - began
    (proc,) = early.procs
    assert not proc.is_alive() and proc.exitcode == -signal.SIGTERM
    assert waited < 10  # the grace, and the few seconds a terminated process may take
