"""The ``hpo-trainer`` command: argument parsing and printing only.

Exit codes: 0 success, 1 an error (one paragraph on stderr, a traceback only with
``--debug``), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hpo_trainer.errors import ConfigError, HpoTrainerError, Interrupted

logger = logging.getLogger(__name__)

_EXAMPLES = {
    "search": "hpo-trainer search studies/digits_mlp.py --trials 40 --epochs 20 --workers 2",
    "status": "hpo-trainer status --study-name digits_mlp --json",
    "export": "hpo-trainer export --study-name digits_mlp --out best.json",
    "train": "hpo-trainer train studies/digits_mlp.py --params best.json --epochs 30",
    "dashboard": "hpo-trainer dashboard --port 8080",
    "report": "hpo-trainer report --study-name digits_mlp --out report.html",
    "migrate": "hpo-trainer migrate --from sqlite:///runs/studies.db "
    "--to postgresql+psycopg://user@db/hpo --study-name digits_mlp",
}


def _device_list(text: str) -> list[str]:
    ids = [d.strip() for d in text.split(",")]
    if not ids or not all(d.isdigit() for d in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(
            f"must be distinct GPU ids separated by commas, e.g. 0,1,2,3; got {text!r}"
        )
    return ids


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
_seed = _int_in(0, 2**32 - 1, "a seed")
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

    p = command("search", "create or continue a study and run trials on it")
    p.add_argument("study_file", help="a study file, e.g. studies/digits_mlp.py")
    p.add_argument("--study-name", help="default: the trainer's name")
    _storage_options(p)
    _study_options(p)
    p.add_argument("--trials", type=_positive_int, help="finished trials the study should reach")
    p.add_argument("--epochs", type=_positive_int, help="epochs per trial")
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="local worker processes (default 1, or one per device slot)",
    )
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
    p.add_argument("--sampler", default=None, help="tpe (default), random, cmaes, gp, qmc, grid")
    p.add_argument(
        "--pruner",
        default=None,
        help="median (default), percentile, halving, hyperband, patient, none",
    )
    p.add_argument("--timeout", type=_seconds, help="seconds after which no new trial starts")
    p.add_argument("--seed", type=_seed, help="seed of the sampler and of every trial")
    p.add_argument("--metric", default=None, help="metric to optimise (default val/loss)")
    p.add_argument("--direction", choices=("minimize", "maximize"))

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

    p = command("status", "show the studies in a storage: trials by state, best, running")
    _storage_options(p)
    p.add_argument("--study-name", help="only this study")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")

    p = command("export", "write the best params of a study to a JSON file")
    _storage_options(p)
    p.add_argument("--study-name", help="needed when the storage holds several studies")
    p.add_argument("--out", default="best.json", help="the file to write (default best.json)")
    p.add_argument("--top", type=_positive_int, default=1, help="also list the K best trials")

    p = command("train", "the final training run on exported params")
    p.add_argument("study_file", help="the study file the params were searched with")
    p.add_argument("--params", required=True, help="a params file from `hpo-trainer export`")
    p.add_argument("--epochs", type=_positive_int, help="default: the study file's TRAIN epochs")
    p.add_argument("--save-every", type=_positive_int, help="checkpoint every K epochs")
    p.add_argument("--merge-val", action="store_true", help="train on train + val")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoints")
    _runs_dir_option(p)
    _study_options(p)

    p = command("dashboard", "open optuna-dashboard on the study storage")
    _storage_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=_port, default=8080, help="TCP port (default 8080)")

    p = command("report", "write one HTML file with Optuna's plots of a study")
    _storage_options(p)
    p.add_argument("--study-name", help="needed when the storage holds several studies")
    p.add_argument("--out", default="report.html", help="the file to write")
    return parser


def _storage_url(args: argparse.Namespace) -> str:
    from hpo_trainer.search.storage import default_url

    return args.storage or default_url(args.runs_dir)


def _open(args: argparse.Namespace) -> Any:
    """Open the storage for reading, failing if it does not exist yet."""
    from hpo_trainer.search.storage import open_storage

    return open_storage(_storage_url(args), heartbeat_interval=None, must_exist=True)


def _pick_study(storage: Any, name: str | None) -> str:
    import optuna

    names = [
        s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    ]
    if name is not None:
        if name not in names:
            from hpo_trainer.errors import did_you_mean

            raise ConfigError(
                f"no study named {name!r} in this storage; it has: "
                f"{', '.join(names) or 'no studies'}." + did_you_mean(name, names)
            )
        return name
    if len(names) == 1:
        return names[0]
    raise ConfigError(
        f"the storage holds {len(names)} studies ({', '.join(names) or 'none'}); choose one "
        "with --study-name"
    )


def _cmd_search(args: argparse.Namespace) -> int:
    from hpo_trainer import studyfile
    from hpo_trainer.search.engine import search

    if not args.debug:
        # The live progress line replaces the per-trial log lines of the workers.
        os.environ["HPO_TRAINER_LOG_LEVEL"] = "WARNING"
        logging.getLogger("hpo_trainer.search").setLevel(logging.WARNING)
    defaults = studyfile.defaults(args.study_file, "SEARCH")
    trainer = studyfile.load_trainer_from_file(
        args.study_file, **dict(args.options), runs_dir=args.runs_dir, quiet=True
    )
    options: dict[str, Any] = {
        "epochs": args.epochs or defaults.get("epochs", 10),
        "n_trials": args.trials or defaults.get("n_trials", 20),
        "storage": args.storage or defaults.get("storage"),
        "study_name": args.study_name or defaults.get("study_name"),
        "n_workers": args.workers,
        "devices": args.devices,
        "workers_per_device": args.workers_per_device,
        "provenance": {
            "study_file": str(Path(args.study_file).resolve()),
            "study_file_sha256": studyfile.file_hash(args.study_file),
        },
    }
    for key in ("sampler", "pruner", "seed", "timeout", "metric", "direction"):
        value = getattr(args, key)
        if value is None:
            value = defaults.get(key)
        if value is not None:
            options[key] = value

    def announce(cfg: Any) -> None:
        _say(
            args,
            f"study {cfg.study_name!r}: {cfg.n_trials} trials of up to {cfg.epochs} epochs, "
            f"{cfg.n_workers} worker(s), storage {_masked(cfg.storage)}",
        )

    with _live(args, sys.stderr.isatty()) as show:
        outcome = search(trainer, progress=show, on_start=announce, **options)
    cfg = outcome.config
    _print_status(args, _open_url(cfg.storage), cfg.study_name, as_json=False)
    if outcome.problem is not None:
        print(f"error: {outcome.problem}", file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _live(args: argparse.Namespace, tty: bool) -> Iterator[Callable[[Any], None] | None]:
    """Yield the progress printer: on a terminal a line rewritten in place, otherwise a
    line each time the finished count changes; ``None`` with ``--quiet``.
    """
    if args.quiet:
        yield None
        return
    last_done = [-1]

    def show(p: Any) -> None:
        if tty:
            print("\r\033[K" + p.line(), end="", file=sys.stderr, flush=True)
        elif p.done != last_done[0]:
            last_done[0] = p.done
            print(p.line(), file=sys.stderr, flush=True)

    try:
        yield show
    finally:
        if tty:
            print(file=sys.stderr)


def _open_url(url: str) -> Any:
    from hpo_trainer.search.storage import open_storage

    return open_storage(url, heartbeat_interval=None)


def _masked(url: str) -> str:
    from hpo_trainer.search.storage import mask_url

    return mask_url(url)


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)


def _print_status(
    args: argparse.Namespace, storage: Any, only: str | None, *, as_json: bool
) -> None:
    import optuna

    names = [s.study_name for s in optuna.get_all_study_summaries(storage, False)]
    if only is not None:
        names = [_pick_study(storage, only)]
    from hpo_trainer.search import facts

    summaries = [facts.summary(optuna.load_study(study_name=n, storage=storage)) for n in names]
    if as_json:
        print(json.dumps(summaries, indent=2))
        return
    if not summaries:
        print("no studies in this storage")
    for s in summaries:
        states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(s["states"].items()))
        print(
            f"study {s['study']} ({s['direction']} {s['metric'] or 'value'}): "
            f"{s['trials']} trials: {states or 'none'}"
        )
        if "best" in s:
            b = s["best"]
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items())
            print(f"  best: trial {b['trial']}, value {b['value']:.6g}, {params}")
        for r in s["running"]:
            gpu = r["cuda_visible_devices"]
            where = f"worker {r['worker']} on {r['host']}" + (f", GPU {gpu}" if gpu else "")
            print(f"  running: trial {r['trial']} at epoch {r['epoch']} ({where})")
        if s["budget"] is not None:
            done = s["finished"]
            eta = s["eta_seconds"]
            left = f", about {_duration(eta)} left" if eta and done < s["budget"] else ""
            print(f"  budget: {done}/{s['budget']} finished{left}")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours}h{minutes:02d}m"
        if hours
        else f"{minutes}m{secs:02d}s"
        if minutes
        else (f"{secs}s")
    )


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cmd_status(args: argparse.Namespace) -> int:
    storage = _open(args)
    _print_status(args, storage, args.study_name, as_json=args.json)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import optuna

    from hpo_trainer import export

    storage = _open(args)
    name = _pick_study(storage, args.study_name)
    study = optuna.load_study(study_name=name, storage=storage)
    record = export.best_record(study, _storage_url(args), top=args.top)
    path = export.write(record, args.out)
    _say(
        args,
        f"best of study {name!r}: trial {record['trial']}, {record['metric']} "
        f"{record['value']:.6g}",
    )
    print(path)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from hpo_trainer import export, studyfile

    record = export.read(args.params)
    defaults = studyfile.defaults(args.study_file, "TRAIN")
    trainer = studyfile.load_trainer_from_file(
        args.study_file, **dict(args.options), runs_dir=args.runs_dir, quiet=args.quiet
    )
    recorded = record.get("study_file_sha256")
    if recorded and recorded != studyfile.file_hash(args.study_file):
        logger.warning(
            "%s changed since these params were exported; the run uses the file as it is now",
            args.study_file,
        )
    if args.merge_val:
        from hpo_trainer.train.data import merge

        trainer.train_data = merge(trainer.train_data, trainer.val_data)
    from hpo_trainer.final import final_run

    summary = final_run(
        trainer,
        params=record["params"] if not args.resume else None,
        epochs=args.epochs or defaults.get("epochs", 30),
        save_every=args.save_every or defaults.get("save_every"),
        resume=args.resume or False,
        provenance={k: record.get(k) for k in ("study", "trial", "value", "storage")},
    )
    metrics = ", ".join(
        f"{k} {v:.4g}"
        for k, v in summary["final_metrics"].items()
        if k.startswith(("test/", "val/"))
    )
    _say(args, f"trained {summary['epochs']} epochs: {metrics}")
    print(summary["run_dir"])
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    url = _storage_url(args)
    _open(args)
    with socket.socket() as s:
        try:
            s.bind((args.host, args.port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {args.host}:{args.port} ({exc.strerror}); the port is in "
                "use: pick another with --port"
            ) from None
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "the dashboard listens on %s: anyone who can reach it can read and change the study",
            args.host,
        )
    from optuna_dashboard import run_server

    _say(args, f"optuna-dashboard on http://{args.host}:{args.port}/ (Ctrl-C to stop)")
    run_server(url, host=args.host, port=args.port)
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from hpo_trainer.search.migrate import migrate

    copied = migrate(
        args.source, args.target, study_name=args.study_name, overwrite=args.overwrite
    )
    for name, n in copied.items():
        _say(args, f"copied study {name!r}: {n} trials to {_masked(args.target)}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    import optuna

    from hpo_trainer.report import write_report

    storage = _open(args)
    name = _pick_study(storage, args.study_name)
    path = write_report(optuna.load_study(study_name=name, storage=storage), args.out)
    print(path)
    return 0


_COMMANDS = {
    "search": _cmd_search,
    "status": _cmd_status,
    "export": _cmd_export,
    "train": _cmd_train,
    "dashboard": _cmd_dashboard,
    "report": _cmd_report,
    "migrate": _cmd_migrate,
}


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
        return _COMMANDS[args.command](args)
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


if __name__ == "__main__":
    sys.exit(main())
