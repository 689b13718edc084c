"""Two or more objectives: checks of ``--objective`` / ``objectives=``, the model measures, the
Pareto front, pruning on one objective, and one real multi-objective search on the digits
study (real SQLite) read back by ``status``, ``export``, ``report`` and the Python API.

The search runs once per session (6 trials of 2 epochs, 1 worker, through the command line);
the other tests here are fast and need no training.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from scenarios import hpo
from test_pruning import _curves

from hpo_trainer.base.errors import ConfigError
from hpo_trainer.cli import _parser
from hpo_trainer.cli import main as cli
from hpo_trainer.search import facts
from hpo_trainer.search.config import make_config
from hpo_trainer.search.pruning import FastReporter
from hpo_trainer.search.strategies import DEFAULT_PRUNER, make_pruner
from hpo_trainer.train.measure import forward_latency_ms, param_count

pytestmark = pytest.mark.fast

STUDY = "studies/digits_mlp.py"
OBJECTIVES = ["val/loss:min", "model/params:min"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from digits_mlp import make_trainer

    return make_trainer(runs_dir=tmp_path_factory.mktemp("runs"), quiet=True)


def _config(task, **options):
    # make_config writes nothing: the storage is only checked, the study made later
    return make_config(task, epochs=1, n_trials=1, storage="sqlite:///unused.db", **options)


# -- checks where the objectives enter ---------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"objectives": ["val/los:min", "model/params"]}, "'val/los' is neither.*'val/loss'"),
        ({"objectives": ["val/loss:up", "model/params"]}, "direction must be min or max.*'up'"),
        ({"objectives": ["val/loss", "val/loss:max"]}, "'val/loss' is given twice"),
        ({"objectives": ["model/params", "model/latency_ms"]}, "all model measures"),
        ({"objectives": OBJECTIVES, "prune_on": "val/acc"}, "prune_on must be one of"),
        ({"objectives": OBJECTIVES, "prune_on": "model/params"}, "measured once after"),
        ({"objectives": OBJECTIVES, "metric": "val/acc"}, "either objectives or metric"),
        ({"objectives": OBJECTIVES, "direction": "maximize"}, "either objectives or metric"),
        ({"prune_on": "val/loss"}, "leave prune_on out"),
        ({"objectives": ["val/loss"], "prune_on": "val/loss"}, "leave prune_on out"),
        ({"objectives": [("val/loss", "min", 3)]}, "'NAME:DIRECTION'"),
        (
            {"objectives": OBJECTIVES, "prune_on": "val/loss", "pruner": "hyperband"},
            "hyperband pruner cannot",
        ),
    ],
)
def test_bad_objectives_are_refused_with_the_fix(digits, options, match):
    with pytest.raises(ConfigError, match=match):
        _config(digits, **options)


def test_objectives_become_the_configuration(digits):
    one = _config(digits, objectives=["val/acc"])  # one objective: a search on one metric
    assert (one.goal.objectives, one.goal.metric, one.goal.direction, one.strategy.pruner) == (
        (),
        "val/acc",
        "maximize",
        DEFAULT_PRUNER,
    )
    two = _config(digits, objectives=["val/acc", ("model/latency_ms", "minimize")])
    assert two.goal.objectives == (("val/acc", "maximize"), ("model/latency_ms", "minimize"))
    assert (two.goal.metric, two.goal.direction, two.strategy.pruner, two.goal.prune_on) == (
        "val/acc",
        "maximize",
        "none",
        None,
    )
    pruned = _config(digits, objectives=["model/params:min", "val/loss:min"], prune_on="val/loss")
    assert (pruned.goal.metric, pruned.goal.direction) == ("val/loss", "minimize")
    assert pruned.strategy.pruner == DEFAULT_PRUNER


def test_the_command_line_reads_repeated_objectives():
    args = _parser().parse_args(
        [
            "search",
            STUDY,
            "--objective",
            "val/loss:min",
            "--objective",
            "model/params:min",
            "--prune-on",
            "val/loss",
        ]  # fmt: skip
    )
    assert (args.objectives, args.prune_on) == (OBJECTIVES, "val/loss")
    assert _parser().parse_args(["export", "--trial", "3"]).trial == 3


# -- the model measures ------------------------------------------------------------------------


def test_model_measures():
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    assert param_count(model) == 64 * 32 + 32 + 32 * 10 + 10
    model.train()
    ms = forward_latency_ms(
        model, lambda b: model(b), torch.zeros(8, 64), device=torch.device("cpu")
    )
    assert 0 < ms < 1000 and model.training  # the model's mode is given back


# -- the Pareto front --------------------------------------------------------------------------


def test_pareto_front_is_optunas_best_trials(tmp_path):
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path}/front.db", directions=["minimize", "maximize"]
    )
    points = [(1, 1), (2, 3), (3, 3), (0.5, 0), (2, 3), (4, 5), (3, 2), (1, 1)]
    for a, b in points:
        study.tell(study.ask(), [a, b])
    study.tell(study.ask(), state=TrialState.FAIL)
    front = facts.pareto_front(study)
    assert {t.number for t in front} == {t.number for t in study.best_trials}
    assert [t.values[0] for t in front] == sorted(t.values[0] for t in front)
    ranked = facts.ranked(study)
    assert ranked[: len(front)] == front and len(ranked) == len(points)
    assert facts.best(study) is front[0]


# -- pruning on one objective of several -------------------------------------------------------


@pytest.mark.parametrize("pruner", ["median", "percentile", "patient", "halving", "none"])
@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_pruning_on_one_objective_decides_as_a_single_objective_study(pruner, direction):
    """The second objective of a two-objective study is pruned on exactly as if it were alone."""
    sign = 1 if direction == "minimize" else -1
    multi = optuna.create_study(
        directions=["minimize", direction], pruner=make_pruner(pruner, epochs=8)
    )
    single = optuna.create_study(direction=direction, pruner=make_pruner(pruner, epochs=8))
    decisions = []
    for curve in _curves(5, 12):
        mt, st = multi.ask(), single.ask()
        reporter = FastReporter(multi, mt, direction=direction)
        pruned = False
        for step, value in enumerate(curve):
            reporter.report(sign * value, step)
            st.report(sign * value, step)
            decision = reporter.should_prune()
            assert decision == st.should_prune(), f"trial {mt.number} step {step}"
            decisions.append(decision)
            if decision:
                pruned = True
                break
        if pruned:
            multi.tell(mt, state=TrialState.PRUNED)
            single.tell(st, state=TrialState.PRUNED)
        else:
            multi.tell(mt, [1.0, sign * curve[-1]])
            single.tell(st, sign * curve[-1])
    assert any(decisions) is (pruner != "none")
    assert multi.trials[0].intermediate_values == single.trials[0].intermediate_values


# -- one real search, read back ----------------------------------------------------------------


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """Search the digits study on two objectives from the command line: 6 trials x 2 epochs."""
    root = tmp_path_factory.mktemp("multi")
    study_file = str(Path(__file__).resolve().parents[1] / STUDY)
    proc = hpo(
        "search", study_file, "--trials", 6, "--epochs", 2, "--seed", 0,
        "--objective", "val/loss:min", "--objective", "model/params:min", cwd=root,
    )  # fmt: skip
    url = f"sqlite:///{root}/runs/studies.db"
    study = optuna.load_study(study_name="digits_mlp", storage=url)
    return root, url, study, proc


@pytest.mark.slow  # reads the multi-objective search of `searched`
def test_a_multi_objective_search_from_the_command_line(searched):
    root, url, study, proc = searched
    assert "Optuna cannot prune a study with 2 objectives" in proc.stderr
    assert proc.stderr.count("cannot prune") == 1
    # optuna-dashboard draws the front of a study with several directions and metric names
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] * 2
    assert study.metric_names == ["val/loss", "model/params"]
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 6  # nothing pruned
    for t in trials:
        assert t.values[0] == pytest.approx(min(t.intermediate_values.values()))
        hidden = t.params["model.hidden_size"]
        from digits_mlp import Net

        assert (
            t.values[1]
            == param_count(Net(64, hidden, 10))
            == 64 * hidden + hidden + hidden * 10 + 10
        )
    assert "Pareto front" in proc.stdout


@pytest.mark.slow  # reads the multi-objective search of `searched`
def test_status_shows_the_pareto_front(searched, capsys):
    root, url, study, _ = searched
    assert cli(["status", "--storage", url, "--json"]) == 0
    [summary] = json.loads(capsys.readouterr().out)
    front = facts.pareto_front(study)
    assert [t["trial"] for t in summary["pareto_front"]] == [t.number for t in front]
    assert {t["trial"] for t in summary["pareto_front"]} == {t.number for t in study.best_trials}
    assert [t["values"] for t in summary["pareto_front"]] == [t.values for t in front]
    assert summary["objectives"] == [
        {"metric": "val/loss", "direction": "minimize"},
        {"metric": "model/params", "direction": "minimize"},
    ]
    assert cli(["status", "--storage", url]) == 0
    text = capsys.readouterr().out
    assert "(minimize val/loss, minimize model/params)" in text
    assert f"Pareto front: {len(front)} trial(s)" in text
    for t in front:
        assert f"trial {t.number}: val/loss {t.values[0]:.4g}" in text


@pytest.mark.slow  # reads the multi-objective search of `searched`
def test_export_writes_the_front_and_picks_a_trial(searched, tmp_path, capsys):
    _, url, study, _ = searched
    front = facts.pareto_front(study)
    out = tmp_path / "best.json"
    assert cli(["export", "--storage", url, "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    first = min(front, key=lambda t: t.values[0])
    assert record["trial"] == first.number
    flat = {f"{g}.{k}": v for g, vs in record["params"].items() for k, v in vs.items()}
    assert flat == first.params
    assert record["values"] == dict(zip(["val/loss", "model/params"], first.values))
    assert [t["trial"] for t in record["pareto_front"]] == [t.number for t in front]
    other = max(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.values[0])
    assert cli(["export", "--storage", url, "--out", str(out), "--trial", str(other.number)]) == 0
    record = json.loads(out.read_text())
    assert record["trial"] == other.number
    assert {
        f"{g}.{k}": v for g, vs in record["params"].items() for k, v in vs.items()
    } == other.params
    assert cli(["export", "--storage", url, "--out", str(out), "--trial", "99"]) == 1
    assert "trial 99 of study 'digits_mlp' is not a completed trial" in capsys.readouterr().err


@pytest.mark.slow  # reads the multi-objective search of `searched`
def test_report_has_the_pareto_plot(searched, tmp_path):
    _, url, _, _ = searched
    out = tmp_path / "report.html"
    assert cli(["report", "--storage", url, "--out", str(out)]) == 0
    page = out.read_text()
    assert "<h2>Pareto front</h2>" in page and "the Pareto front has" in page
    assert page.count("<h2>") == 6 and "of val/loss</h2>" in page
    assert page.count("<em>not available") <= 1  # importances may need more trials


@pytest.mark.slow  # reads the multi-objective search of `searched`
def test_python_api_continues_and_refuses_other_objectives(searched, caplog):
    root, url, _, _ = searched
    from digits_mlp import make_trainer

    tr = make_trainer(runs_dir=root / "runs", quiet=True)
    with pytest.raises(ConfigError, match="already exists with the objectives val/loss:min, "
                       "model/params:min, not val/loss:min, model/latency_ms:min"):  # fmt: skip
        tr.hyp_opt(2, 7, storage=url, objectives=["val/loss:min", "model/latency_ms:min"])
    with pytest.raises(ConfigError, match="already exists with the objectives"):
        tr.hyp_opt(2, 7, storage=url, metric="val/loss")
    with caplog.at_level(logging.WARNING, logger="hpo_trainer"):
        study = tr.hyp_opt(2, 7, storage=url, objectives=OBJECTIVES, seed=1)
    assert sum("cannot prune" in r.getMessage() for r in caplog.records) == 1
    assert facts.finished(study.trials) == 7
    best = facts.best(study)
    assert best in facts.pareto_front(study)
    assert tr.resolve_params() == tr.resolve_params(best.params)  # train() uses it
