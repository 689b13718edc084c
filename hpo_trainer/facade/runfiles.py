"""What a finished run folder holds, so that it can be used later without its trainer.

:meth:`~hpo_trainer.Trainer.train` ends by writing, into its run folder:

* ``model.pt``: the weights of the kept epoch (the best one by the monitored metric, unless
  asked for the last), preprocessing statistics included; loaded with
  ``weights_only=True``;
* ``model.pt2``: a ``torch.export`` program, where the model can be captured (loaded only
  on an explicit opt-in: loading one unpickles what it holds);
* ``summary.json``: the params, the kept epoch and its metrics, the recipe (epochs, seed,
  threads), where the params came from, the study file and options that build the model,
  and the shape, type and range of the training inputs (``predict`` checks inputs
  against them).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hpo_trainer.base.errors import ConfigError, is_int, is_real
from hpo_trainer.base.files import atomic_write
from hpo_trainer.train import checkpoint
from hpo_trainer.train.data import input_batches, make_batches, split_xy
from hpo_trainer.train.inputstats import MAX_EXAMPLES, describe

if TYPE_CHECKING:
    from hpo_trainer.facade.trainer import Trainer
    from hpo_trainer.train.state import Run

logger = logging.getLogger(__name__)

#: The format of ``summary.json``.
FORMAT = "hpo-trainer/run-v2"


def export_model(model: torch.nn.Module, example: Any, folder: Path) -> dict[str, str]:
    """Save the model's weights (atomically, with a checksum beside them), and a
    ``torch.export`` program where the model can be captured.

    Returns:
        The files written: ``state_dict`` and, where exported, ``exported_program``.

    """
    files = {}
    weights = folder / "model.pt"
    checkpoint.save(dict(model.state_dict()), weights)
    files["state_dict"] = str(weights)
    if example is not None:
        try:
            model.eval()
            buffer = io.BytesIO()
            with warnings.catch_warnings():  # tracing notes about the model, not the user's
                warnings.simplefilter("ignore")
                torch.export.save(_export_program(model, example), buffer)
            files["exported_program"] = str(atomic_write(folder / "model.pt2", buffer.getvalue()))
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


def made_by(trainer: Trainer, provenance: Mapping[str, Any] | None) -> dict[str, Any] | None:
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
    source = trainer.test_data if trainer.test_data is not None else trainer.val_data
    if source is None:
        return None
    try:
        batch = next(iter(make_batches(source, batch_size=2, shuffle=False)))
        return split_xy(batch)[0].to(trainer.device).clone()  # not a view: export guards it
    except Exception:
        return None


def _input_record(trainer: Trainer, example: Any) -> dict[str, Any] | None:
    """Return the shape, dtype and range of the training inputs as the model receives them."""
    if not isinstance(example, torch.Tensor):
        return None
    record: dict[str, Any] = {
        "shape": list(example.shape[1:]),
        "dtype": str(example.dtype).removeprefix("torch."),
    }
    try:
        parts = list(input_batches(trainer.train_data, limit=MAX_EXAMPLES))
        stats = describe(torch.cat([p.reshape(len(p), -1) for p in parts]))
    except Exception as exc:  # a user dataset may not yield plain tensors
        logger.info("no statistics of the training inputs (%s)", exc)
        stats = None
    if stats is not None:
        record["stats"] = stats
    return record


def write_run(
    trainer: Trainer,
    run: Run,
    run_dir: Path,
    *,
    kept_epoch: int,
    monitor: tuple[str, str] | None,
    recipe: Mapping[str, Any],
    provenance: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Write the run's model files and ``summary.json``, and return the summary.

    Args:
        trainer: The trainer that trained ``run``.
        run: The run, its model holding the kept epoch's weights.
        run_dir: The run folder.
        kept_epoch: The epoch whose weights the model holds (1-based).
        monitor: The metric and direction that chose the kept epoch (``None``: the last).
        recipe: What the run was trained with: ``epochs``, ``seed``, ``threads``, ...
        provenance: Where the params came from (study, trial, value, best epoch, storage);
            ``study_file`` and ``study_options`` name the study file that builds the model.

    """
    history = run.state.history
    example = _example_input(trainer)
    files = export_model(run.state.model, example, run_dir)
    given = dict(provenance or {})
    summary = {
        "format": FORMAT,
        "run_dir": str(run_dir),
        "epochs": run.state.epoch,
        "kept_epoch": kept_epoch,
        "monitor": None if monitor is None else {"metric": monitor[0], "direction": monitor[1]},
        "params": {k: {n: _plain(v) for n, v in vs.items()} for k, vs in run.state.params.items()},
        "final_metrics": {
            k: v[kept_epoch - 1] for k, v in history.items() if len(v) >= kept_epoch
        },
        "last_metrics": {k: v[-1] for k, v in history.items() if v},
        "files": files,
        "recipe": {k: _plain(v) for k, v in recipe.items()},
        "searched_in": {
            k: v for k, v in given.items() if k not in ("study_file", "study_options")
        },
        "study_file": made_by(trainer, provenance),
        "preprocess": None if trainer.preprocess is None else repr(trainer.preprocess),
        "input": _input_record(trainer, example),
    }
    # The run's own file (a resumed run writes it again): not a user's output to guard.
    atomic_write(run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def read_summary(run_dir: Path) -> dict[str, Any]:
    """Read a finished run's ``summary.json``, checking that it has the form ``train`` writes.

    Raises:
        ConfigError: If the folder or the file is missing, or the file is damaged (each
            field that is not as written is named).

    """
    if not run_dir.is_dir():
        raise ConfigError(
            f"run folder {str(run_dir)!r} does not exist; give a folder that "
            "`hpo-trainer train` printed, e.g. runs/digits_mlp-20261129-091738"
        )
    path = run_dir / "summary.json"
    if path.exists() and not path.is_file():
        raise ConfigError(f"{str(path)!r} is not a file; train the run again")
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"run folder {str(run_dir)!r} has no summary.json: it is not a finished run; "
            "finish it with `hpo-trainer train STUDY --params best.json --resume RUN_DIR`"
        ) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{str(path)!r} cannot be read ({exc}); train the run again") from None
    if not isinstance(summary, dict):
        raise ConfigError(f"{str(path)!r} must hold a JSON object; train the run again")
    problems = _summary_problems(summary)
    if problems:
        raise ConfigError(f"{str(path)!r} is damaged: {'; '.join(problems)}; train the run again")
    return summary


def _summary_problems(summary: dict[str, Any]) -> list[str]:
    """Say which fields of a summary do not have the form ``train`` writes."""
    problems = []
    params = summary.get("params")
    if params is not None and not (
        isinstance(params, dict) and all(isinstance(v, dict) for v in params.values())
    ):
        problems.append(f"'params' must map targets to {{name: value}}, got {params!r}")
    made = summary.get("study_file")
    if made is not None and not (
        isinstance(made, dict)
        and isinstance(made.get("path"), str)
        and isinstance(made.get("options") or {}, dict)
    ):
        problems.append(f"'study_file' must be {{'path': str, 'options': {{}}}}, got {made!r}")
    given = summary.get("input")
    if given is not None:
        shape = given.get("shape") if isinstance(given, dict) else None
        dtype = given.get("dtype") if isinstance(given, dict) else None
        if not (isinstance(shape, list) and all(is_int(d, 1) for d in shape)):
            problems.append(f"'input' must have a 'shape' of positive integers, got {given!r}")
        known = getattr(torch, str(dtype), None)
        if not isinstance(known, torch.dtype) or known == torch.bool or known.is_complex:
            problems.append(f"'input' has an unknown 'dtype' {dtype!r}")
        stats = given.get("stats") if isinstance(given, dict) else None
        if stats is not None and not _stats_ok(stats):
            problems.append("'input' has 'stats' that are not lists of numbers of one length")
    recipe = summary.get("recipe")
    if recipe is not None and not isinstance(recipe, dict):
        problems.append(f"'recipe' must be an object, got {recipe!r}")
    metrics = summary.get("final_metrics")
    if metrics is not None and not isinstance(metrics, dict):
        problems.append(f"'final_metrics' must be an object, got {metrics!r}")
    return problems


def _stats_ok(stats: Any) -> bool:
    if not isinstance(stats, dict):
        return False
    columns = [stats.get(k) for k in ("min", "max")]
    return (
        all(isinstance(c, list) and c for c in columns)
        and all(is_real(v, finite=True) for c in columns for v in c)  # type: ignore[union-attr]
        and len({len(c) for c in columns}) == 1  # type: ignore[arg-type]
    )
