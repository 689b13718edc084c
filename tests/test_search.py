import json
import os
import sqlite3
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from scenarios import check_resumed, kill_mid_trial_then_resume

from hpo_trainer import ConfigError, StorageError
from hpo_trainer.facade.studyfile import load_trainer_from_file
from hpo_trainer.search.config import canonical_options, make_config
from hpo_trainer.search.early import cores
from hpo_trainer.search.engine import search
from hpo_trainer.search.processes import worker_env
from hpo_trainer.search.storage import open_storage

HERE = Path(__file__).resolve().parent
TUNABLE = HERE / "studies" / "tunable_digits.py"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _tunable(tmp_path, **options):
    return load_trainer_from_file(TUNABLE, runs_dir=tmp_path / "runs", **options)


def _url(tmp_path):
    return f"sqlite:///{tmp_path}/study.db"


def test_two_workers_share_one_study_and_reach_exactly_the_budget(make_trainer, tmp_path):
    tr = make_trainer()
    study = tr.hyp_opt(epochs=3, iters=8, n_workers=2, storage=_url(tmp_path), seed=0)
    states = Counter(t.state for t in study.trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 8
    assert states[TrialState.RUNNING] == 0
    assert {t.user_attrs["worker"] for t in study.trials} == {0, 1}
    # Running it again continues the same study: nothing is redone.
    again = tr.hyp_opt(epochs=3, iters=8, n_workers=2, storage=_url(tmp_path), seed=0)
    assert len(again.trials) == len(study.trials)
    # a larger budget adds only the difference
    more = tr.hyp_opt(epochs=3, iters=10, storage=_url(tmp_path), seed=0)
    assert sum(t.state in FINISHED for t in more.trials) == 10
    # train() afterwards uses the best params of the study
    history = tr.train(epochs=2)
    best = more.best_params
    assert tr.optimizer.defaults["momentum"] == 0.9
    assert tr.model.h.out_features == best["model.hidden_size"]
    assert len(history["val/loss"]) == 2


def test_trial_records_what_happened(make_trainer, tmp_path):
    tr = make_trainer()
    study = tr.hyp_opt(epochs=4, iters=3, storage=_url(tmp_path), pruner="none", seed=0)
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        assert t.user_attrs["epochs"] == 4 and t.user_attrs["device"] == "cpu"
        assert t.user_attrs["wall_time"] > 0
        assert len(t.intermediate_values) == 4
        # the value is the best epoch's validation loss
        assert t.value == min(t.intermediate_values.values())
        assert t.intermediate_values[t.user_attrs["best_epoch"]] == t.value
        assert (tmp_path / "runs" / "digits_mlp" / f"trial-{t.number}").is_dir()
    assert study.metric_names == ["val/loss"]


def test_pruned_trials_keep_their_intermediate_values(make_trainer, tmp_path):
    tr = make_trainer()
    study = tr.hyp_opt(epochs=6, iters=14, storage=_url(tmp_path), seed=3)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, "the median pruner should prune some of 14 trials with lr from 1e-5"
    for t in pruned:
        assert 1 <= len(t.intermediate_values) < 6
        assert t.user_attrs["pruned"].startswith("pruned after epoch")
    # checkpoints of all but the 3 best trials are cleaned up
    kept = list((tmp_path / "runs" / "digits_mlp").glob("trial-*/last.pt"))
    assert len(kept) == 3


def test_nan_trial_is_pruned_and_a_crashing_trial_fails_and_the_study_goes_on(tmp_path):
    tr = _tunable(tmp_path)
    url = _url(tmp_path)
    study = optuna.create_study(study_name="tunable", storage=url)
    study.enqueue_trial({"optimizer.lr": 1e8, "model.hidden_size": 16})  # explodes
    study.enqueue_trial({"optimizer.lr": 0.01, "model.hidden_size": 13})  # raises
    study = tr.hyp_opt(epochs=2, iters=4, storage=url, sampler="random", seed=0)
    by_number = {t.number: t for t in study.trials}
    nan = by_number[0]
    assert nan.state == TrialState.PRUNED
    assert "non-finite loss" in nan.user_attrs["pruned"]
    crash = by_number[1]
    assert crash.state == TrialState.FAIL
    assert crash.user_attrs["failure"] == "ValueError: hidden_size 13 is unlucky"
    assert "Traceback" in crash.user_attrs["traceback"]
    assert sum(t.state in FINISHED for t in study.trials) == 4


def test_seeded_search_repeats_exactly(make_trainer, tmp_path):
    def run(name):
        study = make_trainer(runs_dir=tmp_path / name).hyp_opt(
            epochs=3, iters=12, storage=f"sqlite:///{tmp_path}/{name}.db", seed=7
        )
        return [(t.params, t.value, t.state) for t in study.trials]

    assert run("a") == run("b")


def test_killed_worker_trial_is_retried_from_its_checkpoint(tmp_path):
    url = _url(tmp_path)
    killed_at = kill_mid_trial_then_resume(url, tmp_path / "runs", "tunable")
    check_resumed(url, "tunable", killed_at)


@pytest.mark.parametrize(("usable", "threads"), [(8, "2"), (3, "1"), (1, "1")])
def test_worker_environment_spreads_gpus_and_threads(monkeypatch, usable, threads):
    # one worker gets every CPU this process may use: the product's own count of them
    assert worker_env(0, 1, devices=[])["OMP_NUM_THREADS"] == str(cores())
    # the CPUs it may use (its affinity, as in a container or under taskset), not all of them
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(usable)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    envs = [worker_env(i, 4, devices=["0", "1"]) for i in range(4)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0", "1"]
    assert {(e["OMP_NUM_THREADS"], e["HPO_TRAINER_THREADS"]) for e in envs} == {(threads, threads)}


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"sampler": "tpee"}, ConfigError, "unknown sampler 'tpee'.*Did you mean 'tpe'"),
        ({"pruner": "medain"}, ConfigError, "unknown pruner 'medain'.*median, median-warm"),
        ({"storage": "sqlite:/x.db"}, ConfigError, "three slashes"),
        ({"storage": "mongodb://x"}, ConfigError, "unsupported storage 'mongodb'"),
        ({"metric": "val/f1"}, ConfigError, "not produced.*val/loss, val/acc"),
        ({"direction": "down"}, ConfigError, "minimize' or 'maximize'"),
        ({"iters": 0}, ConfigError, r"iters \(n_trials\) must be an integer >= 1"),
        ({"n_workers": 0}, ConfigError, "n_workers must be an integer >= 1"),
    ],
)
def test_bad_search_options_fail_before_anything_is_written(
    make_trainer, tmp_path, options, error, match
):
    options = {"iters": 2, **options}
    with pytest.raises(error, match=match):
        make_trainer().hyp_opt(epochs=1, **options)
    assert not (tmp_path / "runs").exists()


def test_unknown_storage_scheme_is_a_storage_error():
    from hpo_trainer.search.storage import parse_url

    with pytest.raises(StorageError, match="sqlite:///path/to/studies.db"):
        parse_url("runs/studies.db")


def test_maximising_accuracy(make_trainer, tmp_path):
    study = make_trainer().hyp_opt(
        epochs=2, iters=3, metric="val/acc", storage=_url(tmp_path), seed=0
    )
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert 0 < study.best_value <= 1


@pytest.mark.parametrize("sampler", ["random", "cmaes", "qmc", "grid", "gp"])
def test_every_sampler_runs(make_trainer, tmp_path, sampler):
    from hpo_trainer import Hyperparameters

    tr = make_trainer()
    if sampler == "grid":
        opt = Hyperparameters()
        opt.add_categorical("lr", [0.01, 0.1])
        opt.set_value("momentum", 0.9)
        tr.set_hyperparameters(opt)
    study = tr.hyp_opt(epochs=1, iters=3, sampler=sampler, storage=_url(tmp_path), seed=0)
    assert sum(t.state in FINISHED for t in study.trials) == 3
    # each sampler drew three different points (a grid never repeats one)
    points = {tuple(sorted(t.params.items())) for t in study.trials}
    assert len(points) == 3
    if sampler == "grid":
        assert {t.params["optimizer.lr"] for t in study.trials} <= {0.01, 0.1}


@pytest.mark.parametrize("pruner", ["percentile", "halving", "hyperband", "patient"])
def test_every_pruner_runs(make_trainer, tmp_path, pruner):
    study = make_trainer().hyp_opt(epochs=3, iters=3, pruner=pruner, storage=_url(tmp_path))
    assert sum(t.state in FINISHED for t in study.trials) == 3
    for t in study.trials:  # the pruner was asked after every epoch each trial trained
        assert sorted(t.intermediate_values) == list(range(1, t.user_attrs["epochs"] + 1))
    if pruner in ("halving", "hyperband"):  # these record the rungs they judged in the study
        rungs = [k for t in study.trials for k in t.system_attrs if k.startswith("completed_rung")]
        assert rungs


def test_eight_workers_on_one_sqlite_file_lose_nothing_to_lock_contention(make_trainer, tmp_path):
    from hpo_trainer.search import search

    outcome = search(make_trainer(), epochs=2, n_trials=16, n_workers=8, storage=_url(tmp_path))
    assert outcome.dead_workers == () and outcome.complete  # no worker crashed
    study = optuna.load_study(study_name="digits_mlp", storage=_url(tmp_path))
    states = Counter(t.state for t in study.trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 16
    assert states[TrialState.FAIL] == 0 and states[TrialState.RUNNING] == 0
    with sqlite3.connect(tmp_path / "study.db") as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_out_of_memory_is_recorded_as_such_and_the_worker_goes_on(tmp_path):
    import torch

    tr = _tunable(tmp_path)
    calls = {"n": 0}
    original = tr.pass_batch

    def sometimes_oom(batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(batch)

    tr.pass_batch = sometimes_oom
    url = _url(tmp_path)
    optuna.create_study(study_name="tunable", storage=url).enqueue_trial(
        {"optimizer.lr": 0.01, "model.hidden_size": 16}
    )
    study = tr.hyp_opt(epochs=1, iters=2, storage=url, seed=0)
    first = study.trials[0]
    assert first.state == TrialState.FAIL
    assert first.user_attrs["failure"].startswith("out of memory: CUDA out of memory")
    assert sum(t.state in FINISHED for t in study.trials) == 2


def test_a_recreated_study_never_resumes_an_old_studys_checkpoints(make_trainer, tmp_path):
    url = _url(tmp_path)
    tr = make_trainer()
    tr.hyp_opt(epochs=3, iters=2, storage=url, pruner="none", seed=0)
    assert list((tmp_path / "runs" / "digits_mlp").glob("trial-*/last.pt"))
    optuna.delete_study(study_name="digits_mlp", storage=url)
    study = tr.hyp_opt(epochs=3, iters=2, storage=url, pruner="none", seed=5)
    for t in study.trials:
        assert "resumed_from_epoch" not in t.user_attrs
        assert t.user_attrs["epochs"] == 3


# -- the other names of the budget and of the workers ------------------------------------


def test_trials_and_workers_are_other_names_of_n_trials_and_n_workers(make_trainer):
    tr = make_trainer()
    cfg = make_config(tr, epochs=2, trials=7, workers=3)
    assert (cfg.budget.n_trials, cfg.placement.n_workers) == (7, 3)
    same = make_config(tr, epochs=2, n_trials=7, trials=7, n_workers=3, workers=3)
    assert (same.budget.n_trials, same.placement.n_workers) == (7, 3)
    assert make_config(tr, epochs=2, n_trials=7).placement.n_workers == 1


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {"n_trials": 5, "trials": 6},
            r"trials is another name of n_trials, but they were given different values "
            r"\(n_trials=5, trials=6\); give only one of them",
        ),
        (
            {"n_trials": 5, "n_workers": 1, "workers": 2},
            r"workers is another name of n_workers, .* \(n_workers=1, workers=2\)",
        ),
        ({}, r"n_trials is required: .* e\.g\. n_trials=20 \(or trials=20\)"),
        ({"trials": 0}, r"iters \(n_trials\) must be an integer >= 1, got 0"),
        ({"n_trials": 5, "worker": 2}, r"unknown search option 'worker'\. Did you mean"),
    ],
)
def test_an_alias_given_with_another_value_than_its_name_is_refused(make_trainer, options, match):
    with pytest.raises(ConfigError, match=match):
        make_config(make_trainer(), epochs=2, **options)


def test_hyp_opt_takes_workers_and_refuses_trials_that_disagree_with_iters(make_trainer, tmp_path):
    with pytest.raises(ConfigError, match=r"\(n_trials=3, trials=4\)"):
        make_trainer().hyp_opt(epochs=1, iters=3, trials=4, workers=2)
    assert not (tmp_path / "runs").exists()


def test_a_study_files_search_dict_may_use_the_other_names():
    assert canonical_options({"epochs": 3, "trials": 40, "workers": 2}) == {
        "epochs": 3,
        "n_trials": 40,
        "n_workers": 2,
    }
    assert canonical_options({"n_trials": 40, "trials": 40}) == {"n_trials": 40}
    with pytest.raises(ConfigError, match=r"\(n_trials=40, trials=20\); give only one"):
        canonical_options({"n_trials": 40, "trials": 20})


def test_search_dict_aliases_and_unknown_keys_from_the_command_line(tmp_path, monkeypatch, capsys):
    from hpo_trainer import cli

    source = (Path(__file__).resolve().parents[1] / "studies" / "digits_mlp.py").read_text()
    study = tmp_path / "aliased.py"
    study.write_text(
        source.replace(
            'SEARCH = {"epochs": 20, "n_trials": 40}', 'SEARCH = {"epochs": 1, "trials": 2}'
        )
    )
    monkeypatch.chdir(tmp_path)
    assert cli.main(["search", str(study), "--quiet"]) == 0
    storage = f"sqlite:///{tmp_path}/runs/studies.db"
    assert len(optuna.load_study(study_name="digits_mlp", storage=storage).trials) == 2
    typo = tmp_path / "typo.py"
    typo.write_text(source.replace('"n_trials": 40', '"n_trails": 40'))
    assert cli.main(["search", str(typo), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "SEARCH in" in err and "unknown option(s) n_trails" in err
    assert "Did you mean 'n_trials'?" in err


def test_a_study_folder_belongs_to_one_storage(tmp_path):
    """Two studies of one name in two storages would share RUNS_DIR/NAME and remove each
    other's checkpoints: a new study there is refused before anything is written, and a study
    that exists in its storage (continued, or migrated with its trials) claims the folder."""
    tr = load_trainer_from_file(HERE.parent / "studies/digits_mlp.py", runs_dir=tmp_path / "r")
    journal, db = f"journal:{tmp_path}/j.log", tmp_path / "s.db"
    search(tr, epochs=1, n_trials=1, storage=journal, study_name="same")
    record = json.loads((tmp_path / "r/same/study.json").read_text())
    assert record["study"] == "same" and record["storage"].endswith("j.log")
    with pytest.raises(ConfigError, match=r"holds the trials of study 'same' in another storage"):
        search(tr, epochs=1, n_trials=1, storage=f"sqlite:///{db}", study_name="same")
    assert not db.exists() or optuna.get_all_study_names(f"sqlite:///{db}") == []
    assert (tmp_path / "r/same/trial-0/last.pt").exists()  # the journal study's checkpoint
    optuna.copy_study(
        from_study_name="same", from_storage=open_storage(journal), to_storage=f"sqlite:///{db}"
    )
    outcome = search(tr, epochs=1, n_trials=2, storage=f"sqlite:///{db}", study_name="same")
    assert outcome.finished == 2
    assert "s.db" in json.loads((tmp_path / "r/same/study.json").read_text())["storage"]
