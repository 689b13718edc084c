"""The command line's parser, in process: what each option becomes, and the one-line refusal
(exit code 2) of each bad value. The commands themselves are replaced by a recorder, so
nothing runs; ``tests/test_cli.py`` drives the real commands in subprocesses."""

from __future__ import annotations

import argparse
import re

import pytest

from hpo_trainer import __version__, cli

pytestmark = pytest.mark.fast

STUDY = "studies/digits_mlp.py"


@pytest.fixture
def parsed(monkeypatch):
    """Run ``cli.main(argv)`` with every command replaced by one that records its args."""
    monkeypatch.delenv(cli.ENV_STORAGE, raising=False)
    monkeypatch.delenv(cli.ENV_RUNS_DIR, raising=False)
    seen: list[argparse.Namespace] = []
    for name in list(cli.COMMANDS):
        monkeypatch.setitem(cli.COMMANDS, name, lambda args: seen.append(args) or 0)

    def parse(*argv: str) -> argparse.Namespace:
        assert cli.main(list(argv)) == 0
        (args,) = seen
        seen.clear()
        return args

    return parse


def test_search_options_become_typed_values(parsed):
    args = parsed(
        "search",
        STUDY,
        "--trials",
        "40",
        "--epochs",
        "3",
        "--workers",
        "2",
        "--devices",
        "0, 1",
        "--seed",
        "7",
        "--timeout",
        "90.5",
        "--direction",
        "maximize",
        "-o",
        "hidden_sizes=[32, 64]",
        "--option",
        "data_root=/data/digits",
        "-o",
        "flag=true",
    )
    assert args.command == "search" and args.study_file == STUDY
    assert (args.trials, args.epochs, args.workers, args.seed) == (40, 3, 2, 7)
    assert args.devices == ["0", "1"] and args.timeout == 90.5
    assert args.direction == "maximize"
    assert args.options == [
        ("hidden_sizes", [32, 64]),
        ("data_root", "/data/digits"),
        ("flag", True),
    ]


def test_search_defaults(parsed):
    args = parsed("search", STUDY)
    assert args.storage is None and args.runs_dir == "runs"
    assert args.trials is args.epochs is args.workers is args.seed is None
    assert args.sampler is None and args.pruner is None and args.options == []
    assert args.workers_per_device == 1
    assert args.debug is False and args.quiet is False


def test_storage_and_runs_dir_default_to_the_environment(parsed, monkeypatch):
    monkeypatch.setenv(cli.ENV_STORAGE, "sqlite:///elsewhere.db")
    monkeypatch.setenv(cli.ENV_RUNS_DIR, "/scratch/runs")
    args = parsed("status")
    assert args.storage == "sqlite:///elsewhere.db" and args.runs_dir == "/scratch/runs"
    assert parsed("status", "--storage", "sqlite:///here.db").storage == "sqlite:///here.db"


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_and_quiet_go_before_or_after_the_command(parsed, where):
    flags = ["--debug", "-q"]
    argv = [*flags, "status"] if where == "before" else ["status", *flags]
    args = parsed(*argv)
    assert args.debug is True and args.quiet is True


def test_each_command_parses(parsed):
    assert parsed("export", "--top", "3").top == 3
    assert parsed("export").out == "best.json"
    train = parsed("train", STUDY, "--params", "best.json", "--epochs", "5", "--merge-val")
    assert (train.params, train.epochs, train.merge_val) == ("best.json", 5, True)
    dash = parsed("dashboard", "--port", "8081")
    assert (dash.host, dash.port) == ("127.0.0.1", 8081)
    move = parsed("migrate", "--from", "sqlite:///a.db", "--to", "sqlite:///b.db")
    assert (move.source, move.target, move.overwrite) == (
        "sqlite:///a.db",
        "sqlite:///b.db",
        False,
    )
    assert parsed("report").out == "report.html"
    assert parsed("status", "--json").json is True


BAD = [
    (["search", STUDY, "--trials", "0"], r"--trials: must be 1 or more, got 0"),
    (["search", STUDY, "--epochs", "three"], r"--epochs: must be a whole number, got 'three'"),
    (["search", STUDY, "--seed", "-1"], r"--seed: must be a seed from 0 to 4294967295, got -1"),
    (["search", STUDY, "--devices", "0,0"], r"must be distinct GPU ids .* got '0,0'"),
    (["search", STUDY, "--devices", "gpu0"], r"must be distinct GPU ids .* got 'gpu0'"),
    (["search", STUDY, "--timeout", "0"], r"must be a positive number of seconds.*got '0'"),
    (["search", STUDY, "--timeout", "inf"], r"must be a positive number of seconds.*'inf'"),
    (["search", STUDY, "--timeout", "nan"], r"must be a positive number of seconds.*'nan'"),
    (["search", STUDY, "--timeout", "soon"], r"must be a number of seconds, got 'soon'"),
    (["search", STUDY, "--storage", " "], r"must be a storage URL.*leave --storage out"),
    (["search", STUDY, "-o", "hidden"], r"must be NAME=VALUE .* got 'hidden'"),
    (["search", STUDY, "-o", "1x=2"], r"must be NAME=VALUE .* got '1x=2'"),
    (["search", STUDY, "-o", "runs_dir=x"], r"set runs_dir with --runs-dir"),
    (["search", STUDY, "--direction", "up"], r"--direction: invalid choice: 'up'"),
    (["search"], r"the following arguments are required: study_file"),
    (["train", STUDY], r"the following arguments are required: --params"),
    (["dashboard", "--port", "70000"], r"--port: must be a TCP port from 1 to 65535, got 70000"),
    (["migrate", "--to", "sqlite:///b.db"], r"the following arguments are required: --from"),
    (["serach", STUDY], r"invalid choice: 'serach'"),
    ([], r"the following arguments are required: COMMAND"),
]


@pytest.mark.parametrize(("argv", "match"), BAD, ids=[" ".join(a[2:] or a) for a, _ in BAD])
def test_bad_option_is_one_line_and_exit_code_2(argv, match, capsys, monkeypatch):
    ran = []
    for name in list(cli.COMMANDS):
        monkeypatch.setitem(cli.COMMANDS, name, lambda args: ran.append(args) or 0)
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(match, " ".join(err.split())), err
    assert ran == []


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"hpo-trainer {__version__}"


def test_n_trials_and_n_workers_are_other_names_of_trials_and_workers(parsed):
    args = parsed("search", STUDY, "--n-trials", "12", "--n-workers", "3")
    assert (args.trials, args.workers) == (12, 3)
    args = parsed("search", STUDY, "--trials", "12", "--workers", "3")
    assert (args.trials, args.workers) == (12, 3)
    assert parsed("search", STUDY, "--n-workers", "2").workers_per_device == 1


@pytest.mark.parametrize("flag", ["--n-trials", "--n-workers"])
def test_the_aliases_refuse_bad_values_as_the_options_do(flag, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["search", STUDY, flag, "0"])
    assert exc.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"argument {flag}: must be 1 or more, got 0" in err


@pytest.mark.parametrize(
    ("devices", "match"),
    [
        ("cuda:0", r"got 'cuda:0'; GPUs are named by their index: did you mean '0'\?"),
        ("cuda:0,cuda:1", r"did you mean '0,1'\?"),
        ("0,", r"got '0,'"),
        ("1,01", r"got '1,01'; name each GPU once.*--workers-per-device"),
    ],
)
def test_devices_are_checked_by_the_rule_of_the_python_api(devices, match, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["search", STUDY, "--devices", devices])
    assert exc.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert re.search(rf"argument --devices: devices must be distinct GPU ids.*{match}", err), err
