"""What hpo-trainer needs from Optuna, checked against the Optuna this interpreter imports.

Run by ``tests/test_optuna_contract.py`` twice: with the Optuna installed in the venv (the
highest the project allows) and with the lowest allowed one put first on ``PYTHONPATH``
(``make install`` keeps it in ``.venv/optuna-lowest``). Each check names the promise it
tests; the script prints ``optuna <version>: <n> checks passed`` or fails on the first
broken one. Usage: ``python tests/optuna_contract.py RUNS_DIR [REDIS_URL [POSTGRES_URL]]``.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.simplefilter("ignore")
optuna.logging.set_verbosity(optuna.logging.WARNING)

from hpo_trainer.facade.studyfile import load_trainer_from_file  # noqa: E402
from hpo_trainer.search import heartbeat, optuna_api  # noqa: E402
from hpo_trainer.search.pruning import FastReporter  # noqa: E402
from hpo_trainer.search.storage import open_storage  # noqa: E402

CHECKS: list[Callable[[Path, list[str]], None]] = []


def check(fn: Callable[[Path, list[str]], None]) -> Callable[[Path, list[str]], None]:
    CHECKS.append(fn)
    return fn


def _urls(tmp: Path, redis: str | None, postgres: str | None) -> list[str]:
    urls = [f"sqlite:///{tmp}/contract.db", f"journal:{tmp}/contract.log"]
    return urls + [u for u in (redis, postgres) if u]


def _fresh(url: str, name: str, **kwargs) -> optuna.Study:
    storage = open_storage(url)
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass
    return optuna.create_study(study_name=name, storage=storage, **kwargs)


@check
def adapter_reaches_ids_storage_and_records(tmp: Path, urls: list[str]) -> None:
    for url in urls:
        study = _fresh(url, "contract-adapter")
        trial = study.ask()
        stored = optuna_api.stored_trial(study, trial)
        assert stored.number == trial.number, (url, stored.number)
        assert optuna_api.trial_id(stored) == optuna_api.trial_id(trial), url
        backend = optuna_api.backend_of(study)
        assert backend.get_study_id_from_name("contract-adapter") == optuna_api.study_id(study)
        if url.startswith("sqlite"):  # the budget lock needs the database's engine
            assert isinstance(backend, optuna.storages.RDBStorage), type(backend)
        assert isinstance(optuna_api.storage_of(study), optuna.storages.BaseStorage)
        optuna_api.report_value(study, trial, 3, 0.25)
        assert optuna_api.stored_trial(study, trial).intermediate_values == {3: 0.25}, url
        optuna_api.set_study_record(study, "hpo:contract", {"a": [1, 2]})
        optuna_api.set_study_record(study, "hpo:cleared", None)
        records = optuna_api.study_records(study)
        assert records["hpo:contract"] == '{"a": [1, 2]}', records
        assert records["hpo:cleared"] == "null", records
        heartbeat.beat(optuna_api.storage_of(study), optuna_api.trial_id(trial), 7.0)
        attrs = optuna_api.stored_trial(study, trial).system_attrs
        assert attrs.get(heartbeat.GRACE_KEY) == 7.0, attrs


@check
def an_enqueued_trial_is_asked_first_with_its_params(tmp: Path, urls: list[str]) -> None:
    # retries of dead workers' trials and warm starts rely on it
    for url in urls:
        study = _fresh(url, "contract-enqueue")
        study.enqueue_trial({"lr": 0.01}, user_attrs={"enqueued_from": "contract"})
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        assert len(waiting) == 1, url
        trial = study.ask()
        assert trial.suggest_float("lr", 1e-4, 1.0, log=True) == 0.01, url
        assert trial.user_attrs == {"enqueued_from": "contract"}, url
        assert not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), url


def _prunes(pruner: optuna.pruners.BasePruner, url: str) -> list[bool]:
    """Prune decisions for a falling and a rising trial in a study maximising its second
    objective, whose finished trials held 0.8 to 0.95 at every epoch."""
    study = _fresh(url, "contract-prune", directions=["minimize", "maximize"], pruner=pruner)
    for acc in (0.8, 0.85, 0.9, 0.95):  # reported and judged as a search does
        done = study.ask()
        reporter = FastReporter(study, done, ttl=0.0, direction="maximize")
        for step in range(3):
            reporter.report(acc, step)
            reporter.should_prune()
        study.tell(done, [1 - acc, acc])
    decisions = []
    for curve in ((0.3, 0.2, 0.1), (0.97, 0.98, 0.99)):
        trial = study.ask()
        reporter = FastReporter(study, trial, ttl=0.0, direction="maximize")
        for step, acc in enumerate(curve):
            reporter.report(acc, step)
        decisions.append(reporter.should_prune())
        study.tell(trial, state=TrialState.PRUNED)
    return decisions


@check
def pruners_prune_the_objective_they_are_given(tmp: Path, urls: list[str]) -> None:
    # a pruner that read ``study.directions[0]`` would prune the best trial here instead
    pruners = {
        "median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        "percentile": optuna.pruners.PercentilePruner(25.0, n_startup_trials=2),
        "patient": optuna.pruners.PatientPruner(
            optuna.pruners.MedianPruner(n_startup_trials=2), patience=0
        ),
        "halving": optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
    }
    url = urls[0]
    for name, pruner in pruners.items():
        assert _prunes(pruner, url) == [True, False], name


@check
def lean_reads_and_own_trial_rows_are_optuna_trials(tmp: Path, urls: list[str]) -> None:
    # the budget lock's start path reads and creates trials without Optuna's ORM
    for url in [u for u in urls if not u.startswith("journal")]:
        study = _fresh(url, "contract-start")
        backend, sid = optuna_api.backend_of(study), optuna_api.study_id(study)
        done = study.ask()
        done.suggest_float("lr", 1e-4, 1.0, log=True)
        study.tell(done, 0.5)
        failed = study.ask()
        failed.set_user_attr("failure", "ValueError: boom")
        study.tell(failed, state=TrialState.FAIL)
        running = study.ask()
        heartbeat.beat(backend, optuna_api.trial_id(running), 5.0)
        ids = [optuna_api.trial_id(t) for t in (done, failed, running)]
        lean = optuna_api.read_trials_since(
            backend, sid, after=-1, user_keys=["failure"], system_keys=[heartbeat.GRACE_KEY]
        )
        assert [(t.number, t.state) for t in lean] == [
            (0, TrialState.COMPLETE),
            (1, TrialState.FAIL),
            (2, TrialState.RUNNING),
        ], (url, lean)
        assert lean[1].user_attrs.get("failure") == "ValueError: boom", url
        assert lean[2].system_attrs.get(heartbeat.GRACE_KEY) == 5.0, url
        since = optuna_api.read_trials_since(backend, sid, after=ids[1], among={ids[0]})
        assert [t.number for t in since] == [0, 2], url
        mine = optuna_api.create_running_trial(
            backend, sid, known=3, after=ids[2], system_attrs={"hpo:mark": 1}
        )
        theirs = backend.create_new_trial(sid)  # Optuna's own numbering goes on after ours
        made = backend.get_trial(mine)
        assert (made.number, made.state) == (3, TrialState.RUNNING), (url, made)
        assert made.system_attrs.get("hpo:mark") == 1 and made.datetime_start is not None
        assert backend.get_trial(theirs).number == 4, url
        trial = optuna_api.open_trial(study, mine)
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        study.tell(trial, 0.25)
        told = optuna_api.stored_trial(study, trial)
        assert told.state == TrialState.COMPLETE and told.params == {"lr": lr}, (url, told)
        assert study.best_trial.number == 3, url


@check
def a_search_runs_end_to_end(tmp: Path, urls: list[str]) -> None:
    for i, url in enumerate(urls[:2]):
        runs = tmp / f"runs-{i}"
        tr = load_trainer_from_file(ROOT / "studies/digits_mlp.py", runs_dir=runs, quiet=True)
        study = tr.hyp_opt(epochs=2, iters=3, storage=url, seed=0, study_name="contract-e2e")
        trials = study.get_trials(deepcopy=False)
        states = {t.state for t in trials}
        assert len(trials) == 3 and states <= {TrialState.COMPLETE, TrialState.PRUNED}, states
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        assert done and all(math.isfinite(t.value) for t in done), url
        assert all(heartbeat.GRACE_KEY in t.system_attrs for t in trials), url
        assert all(len(t.intermediate_values) >= 1 for t in trials), url


@check
def trials_are_read_created_and_opened_past_ask(tmp: Path, urls: list[str]) -> None:
    # the trial-start path (hpo_trainer.search.start): lean reads, numbering, Optuna's cache
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    for url in urls:
        study = _fresh(url, "contract-start")
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=1))
        crashed = study.ask()
        crashed.set_user_attr("failure", "ValueError")
        study.tell(crashed, state=TrialState.FAIL)
        running = study.ask()
        heartbeat.beat(optuna_api.storage_of(study), optuna_api.trial_id(running), 7.0)
        study.enqueue_trial({"x": 0.25})
        backend, sid = optuna_api.backend_of(study), optuna_api.study_id(study)
        keys = {"user_keys": ["failure"], "system_keys": [heartbeat.GRACE_KEY]}
        read = optuna_api.read_trials_since(backend, sid, after=-1, **keys)
        assert [(t.number, t.state) for t in read] == [
            (t.number, t.state) for t in study.get_trials(deepcopy=False)
        ], url
        assert read[1].user_attrs == {"failure": "ValueError"}, (url, read[1].user_attrs)
        assert read[2].system_attrs == {heartbeat.GRACE_KEY: 7.0}, (url, read[2].system_attrs)
        last = max(optuna_api.trial_id(t) for t in read)
        mine = optuna_api.trial_id(running)
        again = optuna_api.read_trials_since(backend, sid, after=last, among={mine}, **keys)
        assert [t.number for t in again] == [2], url
        new = optuna_api.create_running_trial(backend, sid, known=len(read), after=last)
        trial = optuna_api.open_trial(study, new)
        assert trial.number == 4, url
        # Optuna's own numbering goes on after ours (the queued trial is asked first)
        assert [study.ask().number, study.ask().number] == [3, 5], url
        assert trial.suggest_float("x", 0.0, 1.0) != 0.25, url  # sampled, not the queued one
        study.tell(trial, 0.5)
        told = study.get_trials(deepcopy=False)[4]
        assert told.state == TrialState.COMPLETE and "x" in told.params, url


def main(argv: list[str]) -> int:
    tmp = Path(argv[1])
    urls = _urls(tmp, *(argv[2:4] + [None, None])[:2])
    for fn in CHECKS:
        fn(tmp, urls)
    print(f"optuna {optuna.__version__}: {len(CHECKS)} checks passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
