"""The final training run on chosen parameters: train, test, save and export the model."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hpo_trainer.errors import ConfigError
from hpo_trainer.files import atomic_write, write_output
from hpo_trainer.train import checkpoint

if TYPE_CHECKING:
    from hpo_trainer.trainer import Trainer

logger = logging.getLogger(__name__)


def _export_model(model: torch.nn.Module, example: Any, folder: Path) -> dict[str, str]:
    """Save the model's weights (atomically, with a checksum beside them), and a
    ``torch.export`` program where the model can be captured.
    """
    files = {}
    weights = folder / "model.pt"
    checkpoint.save(dict(model.state_dict()), weights)
    files["state_dict"] = str(weights)
    if example is not None:
        try:
            model.eval()
            buffer = io.BytesIO()
            torch.export.save(_export_program(model, example), buffer)
            data = buffer.getvalue()
            files["exported_program"] = str(atomic_write(folder / "model.pt2", data))
            # predict checks it before loading: a damaged program is named, not a zip error
            files["exported_program_sha256"] = hashlib.sha256(data).hexdigest()
        except Exception as exc:  # export is best effort: not every model can be captured
            logger.info("no torch.export program (%s)", exc)
    return files


def _export_program(model: torch.nn.Module, example: torch.Tensor) -> Any:
    """Export with a dynamic batch size (any number of rows), else with the example's shape."""
    try:
        batch = {0: torch.export.Dim.AUTO}
        return torch.export.export(model, (example,), dynamic_shapes=(batch,))
    except Exception as exc:
        logger.debug("no program with a dynamic batch size (%s); exporting a fixed one", exc)
        return torch.export.export(model, (example,))


def _made_by(trainer: Trainer, provenance: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Return the study file and ``make_trainer`` options that built ``trainer`` (so that
    ``predict`` can rebuild the model), from ``provenance`` or the trainer's factory.
    """
    given = dict(provenance or {})
    if given.get("study_file"):
        path, options = given["study_file"], given.get("study_options") or {}
    else:
        factory = trainer.factory
        if not isinstance(factory, functools.partial) or not factory.args:
            return None
        if not str(factory.args[0]).endswith(".py"):
            return None
        path, options = factory.args[0], factory.keywords
    kept = {k: v for k, v in options.items() if k not in ("runs_dir", "quiet")}
    return {"path": str(path), "options": json.loads(json.dumps(kept, default=str))}


def _example_input(trainer: Trainer) -> Any:
    from hpo_trainer.train.data import make_batches, split_xy

    source = trainer.test_data if trainer.test_data is not None else trainer.val_data
    if source is None:
        return None
    try:
        batch = next(iter(make_batches(source, batch_size=2, shuffle=False)))
        return split_xy(batch)[0].to(trainer.device)
    except Exception:
        return None


def final_run(
    trainer: Trainer,
    *,
    params: Mapping[str, Any] | None,
    epochs: int,
    save_every: int | None = None,
    resume: bool | str | Path = False,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train on ``params``, then write the model and a run summary into the run folder.

    Args:
        trainer: The configured trainer.
        params: The values to train with (``None``: the best of the last search, or the
            checkpoint's when resuming).
        epochs: How many epochs to train.
        save_every: Save a checkpoint every this many epochs.
        resume: Continue a run from its newest good checkpoint.
        provenance: Where the params came from (study, trial, value, storage), recorded as
            ``searched_in``; ``study_file`` and ``study_options`` name the study file that
            builds the model (default: the one the trainer was loaded from), recorded so
            that ``hpo-trainer predict`` can rebuild it.

    Returns:
        The summary, also written as ``summary.json`` in the run folder. Beside the metrics
        it records the study file and its options, and the shape and dtype of one input
        example (``input``), which ``predict`` checks inputs against.

    Raises:
        ConfigError: If the configuration, ``params`` or an argument is not valid.

    """
    history = trainer.train(epochs, save_every=save_every, params=params, resume=resume)
    run_dir = trainer.run_dir
    if run_dir is None:  # train() sets it; only a train() overridden without it leaves None
        raise ConfigError(
            "train() left no run folder (trainer.run_dir is None); an overridden train() "
            "must call Trainer.train"
        )
    example = _example_input(trainer)
    files = _export_model(trainer.get_model(), example, run_dir)
    used = params or (trainer.last_run.state.params if trainer.last_run is not None else None)
    summary = {
        "run_dir": str(run_dir),
        "epochs": len(next(iter(history.values()), [])),
        "params": {k: {n: _plain(v) for n, v in vs.items()} for k, vs in (used or {}).items()},
        "final_metrics": {k: v[-1] for k, v in history.items() if v},
        "files": files,
        "searched_in": {
            k: v for k, v in (provenance or {}).items() if k not in ("study_file", "study_options")
        },
        "study_file": _made_by(trainer, provenance),
        "input": None
        if example is None
        else {
            "shape": list(example.shape[1:]),
            "dtype": str(example.dtype).removeprefix("torch."),
        },
    }
    write_output(json.dumps(summary, indent=2) + "\n", run_dir / "summary.json", "summary.json")
    _attach(trainer, summary, provenance)
    return summary


def _attach(
    trainer: Trainer, summary: Mapping[str, Any], provenance: Mapping[str, Any] | None
) -> None:
    """Attach the summary and the model files to the study the params came from, if any."""
    from hpo_trainer.search.artifacts import attach_run
    from hpo_trainer.search.storage import mask_url

    given = dict(provenance or {})
    storage, study = given.get("storage"), given.get("study")
    if not storage or not study:
        return
    if "***" in storage:  # a params file masks passwords: the environment's URL may match
        env = os.environ.get("HPO_TRAINER_STORAGE", "")
        if not env or mask_url(env) != storage:
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


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
