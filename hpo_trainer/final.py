"""The final training run on chosen parameters: train, test, save and export the model."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hpo_trainer.errors import ConfigError
from hpo_trainer.export import write_text

if TYPE_CHECKING:
    from hpo_trainer.trainer import Trainer

logger = logging.getLogger(__name__)


def _export_model(model: torch.nn.Module, example: Any, folder: Path) -> dict[str, str]:
    """Save the model's weights, and a ``torch.export`` program where it works."""
    files = {}
    weights = folder / "model.pt"
    torch.save(model.state_dict(), weights)
    files["state_dict"] = str(weights)
    if example is not None:
        try:
            model.eval()
            program = torch.export.export(model, (example,))
            path = folder / "model.pt2"
            torch.export.save(program, path)
            files["exported_program"] = str(path)
        except Exception as exc:  # export is best effort: not every model can be captured
            logger.info("no torch.export program (%s)", exc)
    return files


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

    Returns:
        The summary, also written as ``summary.json`` in the run folder.

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
    files = _export_model(trainer.get_model(), _example_input(trainer), run_dir)
    summary = {
        "run_dir": str(run_dir),
        "epochs": len(next(iter(history.values()), [])),
        "params": {k: {n: _plain(v) for n, v in vs.items()} for k, vs in (params or {}).items()},
        "final_metrics": {k: v[-1] for k, v in history.items() if v},
        "files": files,
        "searched_in": dict(provenance or {}),
    }
    write_text(json.dumps(summary, indent=2) + "\n", run_dir / "summary.json", "summary.json")
    return summary


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
