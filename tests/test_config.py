"""The search configuration's groups: each checks its own values, and names the bad value and
the fix; ``make_config`` collects every group's problems into one error and hands workers one
frozen, picklable ``SearchConfig``."""

from __future__ import annotations

import dataclasses
import pickle
import re

import pytest
import torch

from hpo_trainer.base.errors import ConfigError
from hpo_trainer.search.config import (
    Budget,
    Durability,
    Goal,
    Placement,
    SearchConfig,
    Strategy,
    StudyIdentity,
    WarmStart,
    make_config,
)
from hpo_trainer.search.heartbeat import GRACE_BEATS

pytestmark = pytest.mark.fast

METRICS = ["train/loss", "train/acc", "val/loss", "val/acc"]


def _only(problems: list[str], match: str) -> None:
    """Assert one problem was found, and that it says ``match`` (a regular expression)."""
    assert len(problems) == 1, problems
    assert re.search(match, problems[0]), problems[0]


# -- budget ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"epochs": 0}, r"epochs must be an integer >= 1 \(the epochs each trial trains\), got 0"),
        ({"n_trials": None}, r"n_trials is required: .* e\.g\. n_trials=20 \(or trials=20\)"),
        ({"n_trials": 2.5}, r"iters \(n_trials\) must be an integer >= 1, got 2\.5"),
        ({"timeout": -1}, r"timeout must be a positive number .* or None for no limit; got -1"),
        ({"timeout": True}, r"timeout must be a positive number .* got True"),
        ({"trial_timeout": float("inf")}, r"trial_timeout must be .* finite .*e\.g\. 600.*inf"),
        ({"max_failures": 0}, r"max_failures must be an integer >= 1 .* or None, got 0"),
    ],
)
def test_a_bad_budget_names_the_value_and_what_it_must_be(options, match):
    _, problems = Budget.from_options(**{"epochs": 3, "n_trials": 10, **options})
    _only(problems, match)


def test_a_budget_fills_in_its_defaults():
    budget, problems = Budget.from_options(epochs=3, n_trials=100, trial_timeout=60)
    assert problems == []
    assert budget == Budget(epochs=3, n_trials=100, trial_timeout=60.0, max_failures=25)
    assert Budget.from_options(epochs=3, n_trials=8)[0].max_failures == 10  # at least 10


# -- goal ------------------------------------------------------------------------------------


def _goal(**options):
    given = {"objectives": None, "metric": "val/loss", "direction": None, "prune_on": None}
    return Goal.from_options(**{**given, **options}, metrics=METRICS, pruner="median")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"metric": "val/accuracy"}, r"metric 'val/accuracy' is not produced .* val/acc"),
        ({"direction": "up"}, r"direction must be 'minimize' or 'maximize', got 'up'"),
        ({"objectives": ["val/loss", "val/los"]}, r"'val/los' is neither.*Did you mean"),
        ({"prune_on": "val/loss"}, r"prune_on \('val/loss'\) .* leave prune_on out"),
    ],
)
def test_a_bad_goal_names_the_value_and_the_fix(options, match):
    _only(_goal(**options)[1], match)


def test_a_goal_reads_its_metric_and_direction_from_the_objectives():
    assert _goal(metric="val/acc")[0] == Goal("val/acc", "maximize")
    one, _ = _goal(objectives=["val/acc"])  # one objective: a search on one metric
    assert one == Goal("val/acc", "maximize")
    two, _ = _goal(objectives=["model/params:min", "val/acc"], prune_on="val/acc")
    assert (two.metric, two.direction, two.prune_on) == ("val/acc", "maximize", "val/acc")
    assert two.objectives == (("model/params", "minimize"), ("val/acc", "maximize"))


# -- strategy --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "match"),
    [
        (Strategy(sampler="tpee"), r"unknown sampler 'tpee'.*Did you mean 'tpe'"),
        (Strategy(pruner="medain"), r"unknown pruner 'medain'.*Did you mean 'median'"),
        (Strategy(seed=2**32), r"seed must be an integer in \[0, 2\*\*32 - 1\] or None, got 4294"),
        (Strategy(seed=-1), r"seed must be an integer .*, got -1"),
    ],
)
def test_a_bad_strategy_names_the_value_and_the_choices(strategy, match):
    _only(strategy.problems(), match)


def test_a_search_on_several_objectives_that_prunes_on_none_runs_without_a_pruner():
    several = Goal(objectives=(("val/loss", "minimize"), ("val/acc", "maximize")))
    assert Strategy(pruner="median").for_goal(several).pruner == "none"
    pruned = dataclasses.replace(several, prune_on="val/loss")
    assert Strategy(pruner="median").for_goal(pruned).pruner == "median"
    assert Strategy(pruner="median").for_goal(Goal()).pruner == "median"


# -- placement -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"n_workers": 0}, r"n_workers must be an integer >= 1 \(local workers.*got 0"),
        ({"n_workers": "2"}, r"n_workers must be an integer >= 1 .*got '2'"),
        ({"workers_per_device": 0}, r"workers_per_device must be an integer >= 1 .*got 0"),
        ({"devices": "cuda:0"}, r"devices must be distinct GPU ids.*did you mean '0'"),
    ],
)
def test_a_bad_placement_names_the_value_and_the_fix(options, match):
    given = {"n_workers": None, "devices": None, "workers_per_device": 1}
    _only(Placement.from_options(**{**given, **options})[1], match)


def test_a_placement_gives_each_worker_its_slot():
    assert Placement.from_options(n_workers=None, devices=None, workers_per_device=1) == (
        Placement(1, None),
        [],
    )
    assert Placement().in_process and not Placement(n_workers=2).in_process
    placed, problems = Placement.from_options(n_workers=None, devices="0", workers_per_device=2)
    assert problems == [] and placed.n_workers == 2 and not placed.in_process
    if not torch.cuda.is_available():  # with GPUs, ids name the visible ones
        assert placed.slots == ("0", "0")
    _only(Placement(slots=("0", 1)).problems(), r"slots must be a non-empty tuple of GPU ids")


# -- durability ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"keep_checkpoints": -1}, r"keep_checkpoints must be an integer >= 0 .*got -1"),
        ({"heartbeat_interval": 0}, r"heartbeat_interval must be a whole number .*got 0"),
        ({"grace_period": 5}, r"grace_period must be .* longer than heartbeat_interval \(5\)"),
    ],
)
def test_bad_durability_names_the_value_and_what_it_must_be(options, match):
    given = {"keep_checkpoints": 3, "heartbeat_interval": 5, "grace_period": None}
    _only(Durability.from_options(runs_dir="runs", **{**given, **options})[1], match)


def test_durability_defaults_the_grace_period_and_checks_the_trial_folders(tmp_path):
    kept, problems = Durability.from_options(
        runs_dir=tmp_path, keep_checkpoints=0, heartbeat_interval=2, grace_period=None
    )
    assert problems == [] and kept.grace_period == 2 * GRACE_BEATS
    assert kept.folder_problems("study") == []
    (tmp_path / "study").write_text("a file where the study's folder goes")
    _only(kept.folder_problems("study"), r"'.*study' is a file, not a folder; give another")


# -- warm start ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"enqueue": 5}, r"enqueue must be a list of params files .* got 5"),
        ({"enqueue": ["best.json", 5]}, r"enqueue\[1\] must be a params file path .* got 5"),
        ({"warm_start_from": " "}, r"warm_start_from must name an earlier study, got ' '"),
        ({"warm_start_top": 0}, r"warm_start_top must be an integer >= 1 .*got 0"),
        (
            {"warm_start_storage": "sqlite:///old.db"},
            r"warm_start_storage is the storage of warm_start_from; give warm_start_from",
        ),
    ],
)
def test_a_bad_warm_start_names_the_value_and_the_fix(options, match):
    given = {"enqueue": (), "warm_start_from": None, "warm_start_storage": None}
    _only(WarmStart.from_options(**{**given, "warm_start_top": 5, **options})[1], match)


def test_a_warm_start_takes_one_params_file_or_a_list():
    assert WarmStart.from_options(
        enqueue="best.json", warm_start_from=None, warm_start_storage=None, warm_start_top=5
    ) == (WarmStart(enqueue=("best.json",)), [])


# -- study identity --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"study_name": "a/b"}, r"must not contain '/'.*got 'a/b'\. .* e\.g\. 'a_b'"),
        ({"study_name": ""}, r"study_name must be a non-empty string, got ''"),
        ({"storage": "sqlite:///:memory:"}, r"not shared between workers; give a file, e\.g\."),
        ({"storage": "mysql://u@h/db"}, r"cannot keep the trial budget exact.*PostgreSQL"),
        ({"provenance": ["x"]}, r"provenance must be a dict of facts .*got \['x'\]"),
    ],
)
def test_a_bad_study_identity_names_the_value_and_the_fix(options, match, tmp_path):
    given = {"study_name": "s", "storage": f"sqlite:///{tmp_path}/s.db", "provenance": None}
    _only(StudyIdentity.from_options(**{**given, **options})[1], match)


# -- the whole -------------------------------------------------------------------------------


def test_make_config_lists_every_groups_problems_in_one_error(make_trainer, tmp_path):
    with pytest.raises(ConfigError, match="4 problems were found") as err:
        make_config(
            make_trainer(),
            epochs=0,
            n_trials=5,
            sampler="tpee",
            keep_checkpoints=-1,
            warm_start_top=0,
            storage=f"sqlite:///{tmp_path}/s.db",
        )
    for name in ("epochs", "sampler", "keep_checkpoints", "warm_start_top"):
        assert name in str(err.value)
    assert not (tmp_path / "s.db").exists()  # nothing written


def test_make_config_groups_the_options_and_workers_get_them_whole(make_trainer, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    cfg = make_config(
        make_trainer(), epochs=2, trials=8, storage=url, seed=3, keep_checkpoints=1, timeout=60
    )
    assert cfg.identity == StudyIdentity("digits_mlp", url, {})
    assert cfg.budget == Budget(epochs=2, n_trials=8, timeout=60, max_failures=10)
    assert (cfg.goal, cfg.strategy.seed, cfg.placement) == (Goal(), 3, Placement())
    assert cfg.durability.keep_checkpoints == 1 and cfg.durability.runs_dir.endswith("runs")
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # what a spawned worker receives
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.budget.n_trials = 9  # type: ignore[misc]
    assert SearchConfig(cfg.identity, cfg.budget).goal == Goal()  # the other groups default
