"""The commands of ``hpo-trainer``: each reads its parsed arguments, calls the library and
prints the result (printing happens here and in the parser module only).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_trainer.base.errors import ConfigError
from hpo_trainer.cli.status import pick_study, print_status

if TYPE_CHECKING:
    from hpo_trainer.search.early import EarlyWorkers

logger = logging.getLogger(__name__)


def _storage_url(args: argparse.Namespace) -> str:
    from hpo_trainer.search.storage import default_url

    return args.storage or default_url(args.runs_dir)


def _open(args: argparse.Namespace) -> Any:
    """Open the storage for reading, failing if it does not exist yet."""
    from hpo_trainer.search.storage import open_storage

    return open_storage(_storage_url(args), must_exist=True)


def _cmd_search(args: argparse.Namespace) -> int:
    from hpo_trainer.search.early import EarlyWorkers, may_have_cuda, scoped_environ

    # The live progress line replaces the per-trial log lines of the workers: they read
    # their level from the environment when they start, so it is set for the search only.
    quiet = {} if args.debug else {"HPO_TRAINER_LOG_LEVEL": "WARNING"}
    search_log = logging.getLogger("hpo_trainer.search")
    level = search_log.level
    with scoped_environ(quiet):
        try:
            if not args.debug:
                search_log.setLevel(logging.WARNING)
            if (args.workers or 1) > 1 and args.devices is None and not may_have_cuda():
                # Start the workers before importing torch here: their start-up overlaps ours.
                path = str(Path(args.study_file).resolve())
                options = {**dict(args.options), "runs_dir": args.runs_dir, "quiet": True}
                build = "hpo_trainer.facade.studyfile:load_trainer_from_file"
                with EarlyWorkers(build, (path,), options, args.workers) as early:
                    return _search(args, early)
            return _search(args, None)
        finally:
            search_log.setLevel(level)


def _search(args: argparse.Namespace, early: EarlyWorkers | None) -> int:
    from hpo_trainer.facade import studyfile
    from hpo_trainer.search.config import canonical_options
    from hpo_trainer.search.engine import search

    defaults = canonical_options(studyfile.defaults(args.study_file, "SEARCH"))
    trainer = studyfile.load_trainer_from_file(
        args.study_file, **dict(args.options), runs_dir=args.runs_dir, quiet=True
    )
    options: dict[str, Any] = {
        "epochs": args.epochs or defaults.get("epochs", 10),
        "n_trials": args.trials or defaults.get("n_trials", 20),
        "storage": args.storage or defaults.get("storage"),
        "study_name": args.study_name or defaults.get("study_name"),
        "n_workers": args.workers or defaults.get("n_workers"),
        "devices": args.devices,
        "workers_per_device": args.workers_per_device,
        "provenance": {
            "study_file": str(Path(args.study_file).resolve()),
            "study_file_sha256": studyfile.file_hash(args.study_file),
        },
    }
    keys = ("sampler", "pruner", "seed", "timeout", "metric", "direction", "trial_timeout")
    keys += ("enqueue", "warm_start_from", "warm_start_storage", "warm_start_top")
    keys += ("objectives", "prune_on")
    known = (*keys, "epochs", "n_trials", "storage", "study_name", "n_workers")
    unknown = sorted(set(defaults) - set(known))
    if unknown:
        from hpo_trainer.base.errors import did_you_mean

        raise ConfigError(
            f"SEARCH in {args.study_file} has unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}." + did_you_mean(unknown[0], known)
        )
    for key in keys:
        value = getattr(args, key)
        if value is None:
            value = defaults.get(key)
        if value is not None:
            options[key] = value

    def announce(cfg: Any) -> None:
        budget = cfg.budget
        _say(
            args,
            f"study {cfg.identity.study_name!r}: {budget.n_trials} trials of up to "
            f"{budget.epochs} epochs, {cfg.placement.n_workers} worker(s), storage "
            f"{_masked(cfg.identity.storage)}",
        )

    with _live(args, sys.stderr.isatty()) as show:
        outcome = search(trainer, progress=show, on_start=announce, early=early, **options)
    cfg = outcome.config
    print_status(_open_url(cfg.identity.storage), cfg.identity.study_name, as_json=False)
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

    return open_storage(url)


def _masked(url: str) -> str:
    from hpo_trainer.search.storage import mask_url

    return mask_url(url)


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)


def _cmd_status(args: argparse.Namespace) -> int:
    storage = _open(args)
    print_status(storage, args.study_name, as_json=args.json)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import optuna

    from hpo_trainer.apps import export
    from hpo_trainer.search.storage import parse_url

    storage = _open(args)
    name = pick_study(storage, args.study_name)
    study = optuna.load_study(study_name=name, storage=storage)
    record = export.best_record(study, _storage_url(args), top=args.top, trial=args.trial)
    # Never write over what was read: the storage's file, the study file.
    reads = (parse_url(_storage_url(args)).path, study.user_attrs.get("hpo:study_file"))
    path = export.write(record, args.out, reads=reads)
    which = "best" if args.trial is None else "chosen"
    values = record.get("values") or {record["metric"]: record["value"]}
    _say(
        args,
        f"{which} of study {name!r}: trial {record['trial']}, "
        + ", ".join(f"{k} {v:.6g}" for k, v in values.items()),
    )
    print(path)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from hpo_trainer.apps import export
    from hpo_trainer.apps.final import final_run, record_monitor, trial_recipe
    from hpo_trainer.facade import studyfile

    record = export.read(args.params)
    recipe = trial_recipe(record)
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
    provenance = {k: record.get(k) for k in ("study", "trial", "value", "storage")}
    provenance["best_epoch"] = recipe.get("best_epoch")
    provenance["value"] = recipe.get("value", provenance["value"])
    monitor = record_monitor(record)
    if args.from_trial:
        summary = _ship(args, trainer, record, provenance)
        epoch = summary["recipe"].get("trial_epoch")
        _report_run(args, summary, f"shipped trial {record.get('trial')}'s epoch {epoch}")
        return 0
    if args.merge_val:
        from hpo_trainer.train.data import merge

        trainer.train_data = merge(trainer.train_data, trainer.val_data)
        trainer.val_data = None  # nothing left to choose an epoch on: the last is kept
    epochs = args.epochs or recipe.get("epochs") or defaults.get("epochs", 30)
    if not args.epochs and recipe.get("epochs") and defaults.get("epochs") not in (None, epochs):
        _say(
            args,
            f"the study file's TRAIN epochs ({defaults['epochs']}) give way to the trial's "
            f"own ({epochs}); --epochs {defaults['epochs']} to train them",
        )
    seed = args.seed if args.seed is not None else recipe.get("seed")
    threads = args.threads or recipe.get("threads")
    if args.resume:
        _say(args, f"resuming {args.resume} with its own params, seed and epochs")
    else:
        _say(args, _plan(record, epochs, seed, threads, args, monitor))
    summary = final_run(
        trainer,
        params=record["params"],
        epochs=epochs,
        save_every=args.save_every or defaults.get("save_every"),
        resume=args.resume or False,
        provenance=provenance,
        seed=seed,
        threads=threads,
        keep=args.keep,
        monitor=monitor,
    )
    kept = f"; kept epoch {summary['kept_epoch']}" if summary["monitor"] else ""
    _report_run(args, summary, f"trained {summary['epochs']} epochs{kept}")
    return 0


def _ship(
    args: argparse.Namespace, trainer: Any, record: dict[str, Any], provenance: dict[str, Any]
) -> dict[str, Any]:
    """Ship the trial's own weights (``--from-trial``), refusing options it would ignore."""
    from hpo_trainer.apps.final import ship_trial

    given = [
        flag
        for flag, used in (
            ("--epochs", args.epochs),
            ("--seed", args.seed is not None),
            ("--threads", args.threads),
            ("--keep", args.keep != "best"),
            ("--merge-val", args.merge_val),
            ("--resume", args.resume),
            ("--save-every", args.save_every),
        )
        if used
    ]
    if given:
        raise ConfigError(
            f"--from-trial ships the trial's own weights without training, so "
            f"{', '.join(given)} would change nothing; leave them out, or leave out "
            "--from-trial to train"
        )
    return ship_trial(trainer, record, provenance=provenance)


def _report_run(args: argparse.Namespace, summary: dict[str, Any], what: str) -> None:
    """Print what a run did, how its value compares with the trial's, and its folder."""
    from hpo_trainer.apps.final import compare

    _say(args, f"{what}: {_metrics(summary)}")
    line = compare(summary)
    if line:
        _say(args, line)
    print(summary["run_dir"])


def _plan(
    record: dict[str, Any],
    epochs: int,
    seed: int | None,
    threads: int | None,
    args: argparse.Namespace,
    monitor: tuple[str, str] | None,
) -> str:
    """Say what the final run repeats of its trial, and what it changes."""
    recipe = record.get("recipe") or {}
    origin = f"trial {record['trial']}'s" if record.get("trial") is not None else "the params'"
    parts = []
    for name, value, text in (
        ("epochs", epochs, f"{epochs} epochs"),
        ("seed", seed, f"seed {seed}"),
        ("threads", threads, f"{threads} thread(s)"),
    ):
        if value is not None:
            given = recipe.get(name)
            parts.append(text + (f" (the trial's: {given})" if given not in (None, value) else ""))
    keep = "the last epoch"
    if args.keep == "best" and not args.merge_val:
        keep = f"the best epoch by {monitor[0] if monitor else 'val/loss'}"
    return f"training {origin} recipe: {', '.join(parts)}; keeping {keep}"


def _metrics(summary: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {v:.4g}"
        for k, v in summary["final_metrics"].items()
        if k.startswith(("test/", "val/"))
    )


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

    from hpo_trainer.search.artifacts import open_store, store_dir

    folder = store_dir(url, args.runs_dir)
    _say(args, f"optuna-dashboard on http://{args.host}:{args.port}/ (Ctrl-C to stop)")
    _say(args, f"artifacts (kept checkpoints, final runs) from {folder}")
    run_server(url, host=args.host, port=args.port, artifact_store=open_store(folder))
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

    from hpo_trainer.apps.report import write_report
    from hpo_trainer.search.storage import parse_url

    storage = _open(args)
    name = pick_study(storage, args.study_name)
    study = optuna.load_study(study_name=name, storage=storage)
    # Never write over what was read: the storage's file, the study file.
    reads = (parse_url(_storage_url(args)).path, study.user_attrs.get("hpo:study_file"))
    path = write_report(study, args.out, reads=reads)
    print(path)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from hpo_trainer.apps.predict import load_run, predict_file

    run = load_run(
        args.run_dir,
        study_file=args.study_file,
        options=dict(args.options) if args.options else None,
        device=args.device,
        trust_exported=args.trust_exported,
    )
    data = predict_file(
        run,
        args.input,
        out=args.out,
        key=args.key,
        batch_size=args.batch_size,
        header={"auto": None, "yes": True, "no": False}[args.header],
        check_inputs=not args.no_input_check,
    )
    if args.out is None:
        sys.stdout.write(data.decode())
    else:
        _say(args, f"predicted {args.input} with run {args.run_dir} (model from {run.source})")
        print(args.out)
    return 0


COMMANDS = {
    "search": _cmd_search,
    "status": _cmd_status,
    "export": _cmd_export,
    "train": _cmd_train,
    "dashboard": _cmd_dashboard,
    "report": _cmd_report,
    "migrate": _cmd_migrate,
    "predict": _cmd_predict,
}
