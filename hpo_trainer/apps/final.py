"""The final run on chosen parameters: the trial's own recipe by default, or its own weights.

A trial's value is its best epoch's value, measured on its seed, its thread count and its
epochs. :func:`final_run` repeats that recipe unless told otherwise (on the CPU the run then
repeats the trial epoch for epoch) and keeps the best epoch's weights, so the model shipped
is at least the model the search measured; its summary says how the two compare.
:func:`ship_trial` skips the retraining: it ships the weights of the trial's best epoch from
the trial's kept checkpoint.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_trainer.base.errors import SEED_LIMIT, CheckpointError, ConfigError, raise_all
from hpo_trainer.facade import runfiles, runs
from hpo_trainer.facade.checks import is_int
from hpo_trainer.train import checkpoint
from hpo_trainer.train.devices import torch_threads
from hpo_trainer.train.loop import evaluate

if TYPE_CHECKING:
    from hpo_trainer.facade.trainer import Trainer

logger = logging.getLogger(__name__)

#: The recipe fields of a params file, and the least and the most value each may take.
_RECIPE_FIELDS = {
    "epochs": (1, 10**6),
    "best_epoch": (1, 10**6),
    "seed": (0, SEED_LIMIT - 1),
    "threads": (1, 1024),
}


def trial_recipe(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return the recipe of the trial a params file came from (empty for a bare file).

    Raises:
        ConfigError: If a recipe field holds something other than a whole number in range.

    """
    recipe = record.get("recipe")
    if recipe is None:
        recipe = {"epochs": record.get("epochs")} if record.get("epochs") is not None else {}
    if not isinstance(recipe, Mapping):
        raise ConfigError(
            f"the params file's 'recipe' must be an object, got {recipe!r}; export it again "
            "with `hpo-trainer export`"
        )
    problems = [
        f"recipe {key} must be an integer from {least} to {most}, got {recipe[key]!r}"
        for key, (least, most) in _RECIPE_FIELDS.items()
        if recipe.get(key) is not None and not (is_int(recipe[key], least) and recipe[key] <= most)
    ]
    epochs, best = recipe.get("epochs"), recipe.get("best_epoch")
    if not problems and epochs is not None and best is not None and best > epochs:
        problems.append(f"recipe best_epoch ({best}) must not be past its epochs ({epochs})")
    raise_all([p + "; export the params again with `hpo-trainer export`" for p in problems])
    out = {k: recipe.get(k) for k in _RECIPE_FIELDS if recipe.get(k) is not None}
    if isinstance(recipe.get("checkpoint"), str):
        out["checkpoint"] = recipe["checkpoint"]
    monitor = recipe.get("monitor")
    if isinstance(monitor, Mapping) and _monitor(monitor) is not None:
        out["monitor"] = _monitor(monitor)
        value = monitor.get("value")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out["value"] = float(value)
    return out


def final_run(
    trainer: Trainer,
    *,
    params: Mapping[str, Any] | None,
    epochs: int,
    save_every: int | None = None,
    resume: bool | str | Path = False,
    provenance: Mapping[str, Any] | None = None,
    seed: int | None = None,
    threads: int | None = None,
    keep: str = "best",
    monitor: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Train on ``params``, then write the model and a run summary into the run folder.

    Args:
        trainer: The configured trainer.
        params: The values to train with (``None``: the best of the last search, or the
            checkpoint's when resuming).
        epochs: How many epochs to train.
        save_every: Save a checkpoint every this many epochs.
        resume: Continue a run from its newest good checkpoint.
        provenance: Where the params came from (study, trial, value, best epoch, storage),
            recorded as ``searched_in``; ``study_file`` and ``study_options`` name the study
            file that builds the model (default: the one the trainer was loaded from).
        seed: Seeds the run (default: the trainer's).
        threads: Torch threads while training (default: as they are).
        keep: ``"best"`` (the best epoch's weights, with validation data) or ``"last"``.
        monitor: The metric and direction that choose the best epoch.

    Returns:
        The summary, also written as ``summary.json`` in the run folder (see
        :mod:`hpo_trainer.facade.runfiles`).

    Raises:
        ConfigError: If the configuration, ``params`` or an argument is not valid.

    """
    if threads is not None and not (is_int(threads, 1) and threads <= 1024):
        raise ConfigError(f"threads must be an integer from 1 to 1024, got {threads!r}")
    with torch_threads(threads):
        trainer.train(
            epochs,
            save_every=save_every,
            params=params,
            resume=resume,
            provenance=provenance,
            seed=seed,
            keep=keep,
            monitor=monitor,
        )
    if trainer.summary is None or trainer.run_dir is None:
        raise ConfigError(
            "train() wrote no run summary; an overridden train() must call Trainer.train"
        )
    _attach(trainer, trainer.summary, provenance)
    return trainer.summary


def ship_trial(
    trainer: Trainer,
    record: Mapping[str, Any],
    *,
    provenance: Mapping[str, Any] | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Ship the trial's own best-epoch weights as a run, without training again.

    The weights come from the trial's kept checkpoint (its ``last.pt``, which carries the
    best epoch's weights); the model is evaluated once on the validation and test sets.

    Args:
        trainer: The configured trainer (the study file that ran the search).
        record: The params file of the trial (``hpo-trainer export``).
        provenance: Where the params came from, recorded as ``searched_in``.
        checkpoint_path: The checkpoint to read (default: the one the params file names).

    Returns:
        The run's summary.

    Raises:
        CheckpointError: If the checkpoint is gone, damaged or holds no best epoch.
        ConfigError: If the params do not fit the study file.

    """
    recipe = trial_recipe(record)
    path = checkpoint_path if checkpoint_path is not None else recipe.get("checkpoint")
    if path is None:
        raise ConfigError(
            "the params file names no trial checkpoint (exported by an older version, or "
            "written by hand); export it again, or train with `hpo-trainer train`"
        )
    if not Path(path).is_file():
        raise CheckpointError(
            f"trial {record.get('trial')}'s checkpoint {str(path)!r} is gone: only the "
            "keep_checkpoints best trials of a study (default 3) keep theirs; train its "
            "recipe instead (leave out --from-trial)"
        )
    ckpt = checkpoint.load(path)
    weights = _best_weights(ckpt, Path(path))
    values = trainer.resolve_params(record["params"])
    if ckpt.get("params") != trainer.encode_params(values):
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written with other params ({ckpt.get('params')}) "
            "than the params file's; it belongs to another trial (the study name was reused?)"
        )
    run = trainer.build(values, epochs=int(ckpt.get("epochs") or 1), seed=0, explain=True)
    try:
        run.state.model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(
            f"the weights in {str(path)!r} do not fit the model the study file builds "
            f"({exc}); use the study file that ran the search"
        ) from None
    kept = weights_epoch(ckpt)
    metrics: dict[str, float] = {}
    for split, batches in (("val", run.val_batches), ("test", run.test_batches)):
        if batches is not None:
            metrics.update(
                evaluate(
                    run.state.model,
                    batches,
                    trainer.pass_batch,
                    split=split,
                    device=run.state.device,
                    amp=run.amp,
                    metric_fns=trainer.metric_fns,
                )
            )
    run.state.history.append(metrics)
    run.state.epoch = 1  # one row of metrics: those of the kept epoch
    folder = runs.new_run_dir(trainer.runs_dir, trainer.name)
    trainer.state_.run_dir, trainer.state_.summary = folder, None
    summary = runfiles.write_run(
        trainer,
        run,
        folder,
        kept_epoch=1,
        monitor=recipe.get("monitor") or _monitor(record),
        recipe={"from_trial_checkpoint": str(path), "trial_epoch": kept, **recipe},
        provenance=provenance,
    )
    trainer.state_.summary = summary
    _attach(trainer, summary, provenance)
    return summary


def _monitor(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """Return a record's ``(metric, direction)`` if both are there and well formed."""
    metric, direction = record.get("metric"), record.get("direction")
    if isinstance(metric, str) and direction in ("minimize", "maximize"):
        return metric, direction
    return None


def record_monitor(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """Return what chooses the final run's best epoch: the trial's recipe's, else the
    record's metric (``None`` for a bare params file).
    """
    return trial_recipe(record).get("monitor") or _monitor(record)


def weights_epoch(ckpt: Mapping[str, Any]) -> int:
    """Return the epoch of the weights :func:`ship_trial` takes from a trial checkpoint."""
    state = _keep_best_state(ckpt)
    return int(state.get("epoch") or ckpt.get("epoch") or 0)


def _keep_best_state(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    states = ckpt.get("callbacks") or {}
    return next((dict(v) for k, v in states.items() if str(k).startswith("KeepBest")), {})


def _best_weights(ckpt: Mapping[str, Any], path: Path) -> dict[str, Any]:
    weights = _keep_best_state(ckpt).get("weights")
    if not isinstance(weights, dict):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds no best-epoch weights (written by an older "
            "version); train with `hpo-trainer train` instead"
        )
    return weights


def _attach(
    trainer: Trainer, summary: Mapping[str, Any], provenance: Mapping[str, Any] | None
) -> None:
    """Attach the summary and the model files to the study the params came from, if any."""
    from hpo_trainer.search.artifacts import attach_run
    from hpo_trainer.search.storage import same_storage

    given = dict(provenance or {})
    storage, study = given.get("storage"), given.get("study")
    if not storage or not study:
        return
    if "***" in storage:  # a params file masks passwords: the environment's URL may match
        env = os.environ.get("HPO_TRAINER_STORAGE", "")
        if not env or not same_storage(env, storage):
            logger.warning(
                "the run is not attached to study %r: the params file's storage %s has its "
                "password masked; set HPO_TRAINER_STORAGE to the full URL to attach it",
                study,
                storage,
            )
            return
        storage = env
    files = [Path(summary["run_dir"]) / "summary.json"]
    files += [
        Path(summary["files"][k])
        for k in ("state_dict", "exported_program")
        if k in summary["files"]
    ]
    attach_run(storage, study, files, runs_dir=trainer.runs_dir)


def compare(summary: Mapping[str, Any]) -> str | None:
    """Return one line comparing the run's kept value with its trial's, if both are known."""
    monitor, trial = summary.get("monitor"), summary.get("searched_in") or {}
    if not monitor or not isinstance(trial.get("value"), (int, float)):
        return None
    name = monitor["metric"]
    mine = (summary.get("final_metrics") or {}).get(name)
    if not isinstance(mine, (int, float)):
        return None
    theirs = float(trial["value"])
    at = f" at epoch {trial['best_epoch']}" if trial.get("best_epoch") else ""
    ratio = f" ({mine / theirs:.3f}x)" if theirs else ""
    shipped = (summary.get("recipe") or {}).get("trial_epoch")
    kept = (
        f"the trial's own epoch {shipped}"
        if shipped
        else f"kept epoch {summary['kept_epoch']} of {summary['epochs']}"
    )
    return f"{kept}: {name} {mine:.5g}; trial {trial.get('trial')}: {theirs:.5g}{at}{ratio}"
