"""Best parameters out to a JSON file, with provenance, and back in for a final run."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

import optuna

from hpo_trainer.errors import ConfigError
from hpo_trainer.files import write_output
from hpo_trainer.params import group_params, read_file
from hpo_trainer.search import facts
from hpo_trainer.search.storage import mask_url

FORMAT = "hpo-trainer/params-v1"


def _versions() -> dict[str, str]:
    import torch

    from hpo_trainer._version import __version__

    return {
        "hpo_trainer": __version__,
        "optuna": optuna.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def best_record(study: optuna.Study, storage_url: str, *, top: int = 1) -> dict[str, Any]:
    """Return the export record of a study's best trial (and the next ``top - 1``).

    Raises:
        ConfigError: If the study has no completed trial.

    """
    complete = facts.ranked(study)
    if not complete:
        raise ConfigError(
            f"study {study.study_name!r} has no completed trial to export yet; run "
            "`hpo-trainer search` until at least one trial completes"
        )
    best = complete[0]
    attrs = study.user_attrs
    record: dict[str, Any] = {
        "format": FORMAT,
        "params": group_params(best.params),
        "value": best.value,
        "metric": facts.metric(study) or "value",
        "direction": study.direction.name.lower(),
        "trial": best.number,
        "epochs": best.user_attrs.get("max_epochs", attrs.get(facts.EPOCHS_KEY)),
        "study": study.study_name,
        "storage": mask_url(storage_url),
        "study_file": attrs.get("hpo:study_file"),
        "study_file_sha256": best.user_attrs.get(
            "study_file_sha256", attrs.get("hpo:study_file_sha256")
        ),
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    if top > 1:
        record["top"] = [
            {"trial": t.number, "value": t.value, "params": group_params(t.params)}
            for t in complete[:top]
        ]
    return record


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a params file (see :func:`hpo_trainer.params.read_file`, its one reader)."""
    return read_file(path)


def write(record: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write an export record as JSON, atomically (never half-written).

    Args:
        record: The record (see :func:`best_record`).
        path: The file to write.

    Returns:
        The path written.

    Raises:
        ConfigError: If ``path`` is a directory or cannot be written.

    """
    return write_output(json.dumps(record, indent=2, sort_keys=False) + "\n", path, "best.json")
