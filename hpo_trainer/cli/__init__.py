"""The ``hpo-trainer`` command: its arguments and its exit codes (the commands themselves are
in :mod:`hpo_trainer.cli.commands`).

Exit codes: 0 success (for ``search``: the budget was reached, or ``--timeout`` ended it
as asked), 1 an error or a search that stopped short of its budget (one paragraph on
stderr, a traceback only with ``--debug``), 2 bad usage, 130 / 143 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol

from hpo_trainer.base.errors import SEED_LIMIT, HpoTrainerError, Interrupted
from hpo_trainer.cli.commands import COMMANDS

logger = logging.getLogger(__name__)

_EXAMPLES = {
    "search": "hpo-trainer search studies/digits_mlp.py --trials 40 --epochs 20 --workers 2",
    "status": "hpo-trainer status --study-name digits_mlp --json",
    "export": "hpo-trainer export --study-name digits_mlp --out best.json",
    "train": "hpo-trainer train studies/digits_mlp.py --params best.json --epochs 30",
    "dashboard": "hpo-trainer dashboard --port 8080",
    "report": "hpo-trainer report --study-name digits_mlp --out report.html",
    "predict": "hpo-trainer predict runs/digits_mlp-20261129-091738 --input x.npy --out p.csv",
    "migrate": "hpo-trainer migrate --from sqlite:///runs/studies.db "
    "--to postgresql+psycopg://user@db/hpo --study-name digits_mlp",
}


def _device_list(text: str) -> list[str]:
    # The rule of make_config(devices=...), imported here because it imports torch.
    from hpo_trainer.train.devices import parse_devices

    try:
        return parse_devices(text)
    except HpoTrainerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int_in(low: int, high: int | None, what: str = "") -> Callable[[str], int]:
    """Return an argparse type: a whole number from ``low`` to ``high`` (no limit if None)."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"{what} from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"must be {span.strip()}, got {value}")
        return value

    return convert


def _seconds(text: str) -> float:
    """Convert an argument to a finite number of seconds above 0 (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of seconds, e.g. 3600, got {text!r}"
        )
    return value


_positive_int = _int_in(1, None)
_seed = _int_in(0, SEED_LIMIT - 1, "a seed")
_port = _int_in(1, 65535, "a TCP port")


def _storage_arg(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "must be a storage URL, e.g. sqlite:///runs/studies.db, got an empty string; "
            "leave --storage out for the default"
        )
    return text


#: Environment variables that set defaults (for containers and job schedulers).
ENV_STORAGE = "HPO_TRAINER_STORAGE"
ENV_RUNS_DIR = "HPO_TRAINER_RUNS_DIR"


def _runs_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runs-dir",
        default=os.environ.get(ENV_RUNS_DIR, "runs"),
        help=f"folder for runs and the default storage (env {ENV_RUNS_DIR})",
    )


def _study_option(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(
            f"must be NAME=VALUE with NAME a keyword of make_trainer, got {text!r}"
        )
    if name in ("runs_dir", "quiet"):
        raise argparse.ArgumentTypeError(f"set {name} with --{name.replace('_', '-')}")
    try:
        value = json.loads(raw)  # numbers, true/false, null, lists
    except ValueError:
        value = raw  # anything else is a string: --option data_root=/data/digits
    return name, value


def _study_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--option",
        dest="options",
        type=_study_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="passed to the study file's make_trainer(NAME=VALUE); repeatable",
    )


def _storage_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        type=_storage_arg,
        default=os.environ.get(ENV_STORAGE) or None,
        help=f"study storage URL (default: sqlite:///RUNS_DIR/studies.db; env {ENV_STORAGE})",
    )
    _runs_dir_option(p)


def _parser() -> argparse.ArgumentParser:
    from hpo_trainer._version import __version__

    parser = argparse.ArgumentParser(
        prog="hpo-trainer",
        description="Optuna-backed hyperparameter search and training for PyTorch models.",
        epilog="Example: " + _EXAMPLES["search"],
    )
    parser.add_argument("--version", action="version", version=f"hpo-trainer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only results")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help_text, description=help_text, epilog="Example: " + _EXAMPLES[name]
        )
        p.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks and debug logs",
        )
        p.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print only results",
        )
        return p

    _search_arguments(command("search", "create or continue a study and run trials on it"))
    _other_commands(command)
    return parser


class _Options(Protocol):
    """A parser or one of its argument groups: what adds an option."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """Add one option (see :meth:`argparse.ArgumentParser.add_argument`)."""


def _alias(p: _Options, alias: str, of: str, *, convert: Callable[[str], Any]) -> None:
    """Add ``alias`` as another name of the option ``of`` (the same value, the same check).

    A separate option rather than a second name of ``of``, so that an error names the
    option the user typed.
    """
    p.add_argument(alias, dest=of.lstrip("-"), type=convert, metavar="N", help=f"the same as {of}")


def _search_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_file", help="a study file, e.g. studies/digits_mlp.py")
    p.add_argument("--study-name", help="default: the trainer's name")
    _storage_options(p)
    _study_options(p)
    _budget_arguments(p.add_argument_group("budget"))
    _placement_arguments(p.add_argument_group("placement"))
    _strategy_arguments(p.add_argument_group("strategy"))
    _warm_start_arguments(p.add_argument_group("warm start"))
    _objective_arguments(p.add_argument_group("objectives"))


def _budget_arguments(p: _Options) -> None:
    p.add_argument(
        "--trials",
        type=_positive_int,
        help="finished trials the study should reach (n_trials in SEARCH and in Python)",
    )
    _alias(p, "--n-trials", "--trials", convert=_positive_int)
    p.add_argument("--epochs", type=_positive_int, help="epochs per trial")
    p.add_argument("--timeout", type=_seconds, help="seconds after which no new trial starts")
    p.add_argument(
        "--trial-timeout",
        type=_seconds,
        help="seconds a trial may train; past them it stops at the next batch and is pruned",
    )


def _placement_arguments(p: _Options) -> None:
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="local worker processes (default 1, or one per device slot)",
    )
    _alias(p, "--n-workers", "--workers", convert=_positive_int)
    p.add_argument(
        "--devices",
        type=_device_list,
        default=None,
        help="GPU ids to spread local workers over, e.g. 0,1,2,3",
    )
    p.add_argument(
        "--workers-per-device",
        type=_positive_int,
        default=1,
        help="workers sharing each device (default 1)",
    )


def _strategy_arguments(p: _Options) -> None:
    p.add_argument(
        "--sampler",
        default=None,
        help="tpe (default), tpe-independent, gp, auto, random, cmaes, qmc, grid",
    )
    p.add_argument(
        "--pruner",
        default=None,
        help="median-warm (default), median, percentile, halving, halving-warm, hyperband, "
        "patient, none",
    )
    p.add_argument("--seed", type=_seed, help="seed of the sampler and of every trial")


def _warm_start_arguments(p: _Options) -> None:
    p.add_argument(
        "--enqueue",
        action="append",
        metavar="FILE",
        help="a params file (as export writes it) to run first; repeatable",
    )
    p.add_argument(
        "--warm-start-from", metavar="STUDY", help="run the best trials of this study first"
    )
    p.add_argument(
        "--warm-start-storage",
        type=_storage_arg,
        metavar="URL",
        help="storage of --warm-start-from (default: this search's storage)",
    )
    p.add_argument(
        "--warm-start-top",
        type=_positive_int,
        metavar="K",
        help="best completed trials of --warm-start-from to run first (default 5)",
    )


def _objective_arguments(p: _Options) -> None:
    p.add_argument("--metric", default=None, help="metric to optimise (default val/loss)")
    p.add_argument(
        "--direction",
        choices=("minimize", "maximize"),
        help="of --metric (default minimize, or SEARCH's in the study file)",
    )
    p.add_argument(
        "--objective",
        dest="objectives",
        action="append",
        metavar="NAME:DIRECTION",
        help="one objective of a multi-objective search, e.g. val/loss:min; repeat for each "
        "(also model/params and model/latency_ms, measured after training)",
    )
    p.add_argument(
        "--prune-on",
        metavar="NAME",
        help="the one objective a multi-objective search prunes on (default: it prunes none)",
    )


def _other_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    for add in (_migrate, _status, _export, _train, _dashboard, _predict, _report):
        add(command)


def _migrate(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("migrate", "copy a study, with all its trials, to another storage")
    p.add_argument(
        "--from", dest="source", type=_storage_arg, required=True, help="storage URL to copy from"
    )
    p.add_argument(
        "--to", dest="target", type=_storage_arg, required=True, help="storage URL to copy to"
    )
    p.add_argument("--study-name", help="default: every study in the source")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a study of the same name in the target"
    )


def _status(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("status", "show the studies in a storage: trials by state, best, running")
    _storage_options(p)
    p.add_argument("--study-name", help="only this study")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def _export(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("export", "write the best params of a study to a JSON file")
    _storage_options(p)
    p.add_argument("--study-name", help="needed when the storage holds several studies")
    p.add_argument("--out", default="best.json", help="the file to write (default best.json)")
    p.add_argument("--top", type=_positive_int, default=1, help="also list the K best trials")
    p.add_argument(
        "--trial",
        type=_int_in(0, None),
        metavar="N",
        help="export trial N instead of the best (e.g. one of the Pareto front)",
    )


def _train(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("train", "the final training run on exported params")
    p.add_argument("study_file", help="the study file the params were searched with")
    p.add_argument("--params", required=True, help="a params file from `hpo-trainer export`")
    p.add_argument(
        "--epochs",
        type=_positive_int,
        help="default: the trial's own epochs (else the study file's TRAIN epochs, else 30)",
    )
    p.add_argument("--seed", type=_seed, help="default: the trial's own seed")
    p.add_argument(
        "--threads", type=_positive_int, help="torch threads (default: the trial's own)"
    )
    p.add_argument(
        "--keep",
        choices=("best", "last"),
        default="best",
        help="the weights the run ends with: the best epoch's by the study's metric "
        "(default, with validation data) or the last epoch's",
    )
    p.add_argument(
        "--from-trial",
        action="store_true",
        help="ship the trial's own best-epoch weights from its kept checkpoint: no training",
    )
    p.add_argument("--save-every", type=_positive_int, help="checkpoint every K epochs")
    p.add_argument(
        "--merge-val",
        action="store_true",
        help="train on train + val (no validation set left: the last epoch is kept)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoints")
    _runs_dir_option(p)
    _study_options(p)


def _dashboard(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("dashboard", "open optuna-dashboard on the study storage")
    _storage_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=_port, default=8080, help="TCP port (default 8080)")


def _predict(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("predict", "predict with a finished run's model; write CSV, JSON or .npy")
    p.add_argument("run_dir", help="the run folder `hpo-trainer train` printed")
    p.add_argument("--input", required=True, help=".npy, .npz, .pt, .csv, or a folder of images")
    p.add_argument("--out", help="a .csv, .json or .npy file (default: CSV on stdout)")
    p.add_argument("--key", help="the array of an .npz input that holds several")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="default 256")
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N, mps")
    p.add_argument(
        "--study-file", help="the study file that built the run (default: the one it records)"
    )
    p.add_argument(
        "--trust-exported",
        action="store_true",
        help="load the run's torch.export program (model.pt2) instead of rebuilding the model "
        "from the study file: loading it unpickles data, so only for run folders you trust",
    )
    p.add_argument(
        "--no-input-check",
        action="store_true",
        help="predict even on inputs far outside the range of the training inputs",
    )
    p.add_argument(
        "--header",
        choices=("auto", "yes", "no"),
        default="auto",
        help="whether a CSV input's first row is a header (default: auto)",
    )
    _study_options(p)


def _report(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("report", "write one HTML file with Optuna's plots of a study")
    _storage_options(p)
    p.add_argument("--study-name", help="needed when the storage holds several studies")
    p.add_argument("--out", default="report.html", help="the file to write")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
    )
    try:
        import optuna  # slow to import: a Ctrl-C may land here

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return exc.exit_code
    except HpoTrainerError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `hpo-trainer status | head`: the reader is gone, not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's last flush is quiet
        return 0


if __name__ == "__main__":
    sys.exit(main())
