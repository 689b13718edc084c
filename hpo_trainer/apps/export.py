"""Best parameters out to a JSON file, with provenance, and back in for a final run."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from hpo_trainer.base.errors import ConfigError
from hpo_trainer.base.files import write_output
from hpo_trainer.codec.params import group_params, read_file
from hpo_trainer.search import facts
from hpo_trainer.search.storage import absolute_url, mask_url

FORMAT = "hpo-trainer/params-v1"

logger = logging.getLogger(__name__)


def _versions() -> dict[str, str]:
    import torch

    from hpo_trainer._version import __version__

    return {
        "hpo_trainer": __version__,
        "optuna": optuna.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _chosen(study: optuna.Study, complete: list[FrozenTrial], number: int) -> FrozenTrial:
    """Return completed trial ``number``, warning if it is off the Pareto front."""
    chosen = next((t for t in complete if t.number == number), None)
    if chosen is None:
        raise ConfigError(
            f"trial {number} of study {study.study_name!r} is not a completed trial with "
            f"finite values; choose one of {', '.join(str(t.number) for t in complete)} "
            "(`hpo-trainer status` lists the Pareto front)"
        )
    if facts.is_multi(study) and chosen not in facts.pareto_front(study, complete):
        logger.warning(
            "trial %d is not on the Pareto front of study %r: another trial is at least as "
            "good in every objective",
            number,
            study.study_name,
        )
    return chosen


def _multi_part(study: optuna.Study, chosen: FrozenTrial) -> dict[str, Any]:
    """Return what a multi-objective record adds: objectives, values and the Pareto front."""
    goals = facts.objectives(study)
    return {
        "values": {n: v for (n, _), v in zip(goals, chosen.values)},
        "objectives": [{"metric": n, "direction": d} for n, d in goals],
        "pareto_front": [
            {"trial": t.number, "values": t.values, "params": group_params(t.params)}
            for t in facts.pareto_front(study)
        ],
    }


def _recipe(study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
    """Return what made the trial's value, its checkpoint's path made absolute."""
    keep = ("epochs", "best_epoch", "seed", "threads", "checkpoint")
    made = facts.recipe(study, trial)
    recipe = {k: v for k, v in made.items() if k in keep}
    # What chose the best epoch, and its value there: the final run keeps and compares by it.
    recipe["monitor"] = {k: made[k] for k in ("metric", "direction", "value")}
    if recipe.get("checkpoint"):
        recipe["checkpoint"] = str(Path(recipe["checkpoint"]).resolve())
    return recipe


def best_record(
    study: optuna.Study, storage_url: str, *, top: int = 1, trial: int | None = None
) -> dict[str, Any]:
    """Return the export record of a study's best trial (and the next ``top - 1``).

    In a multi-objective study the record also holds each objective, the chosen trial's
    values and the Pareto front; the trial exported is the front's best by the first
    objective unless ``trial`` chooses one.

    Args:
        study: The study.
        storage_url: Its storage URL (recorded with its password masked).
        top: Also list the ``top`` best trials (best first; in a multi-objective study the
            Pareto front first).
        trial: The number of the completed trial to export instead of the best.

    Raises:
        ConfigError: If the study has no completed trial, or ``trial`` is not one.

    """
    complete = facts.ranked(study)
    if not complete:
        raise ConfigError(
            f"study {study.study_name!r} has no completed trial to export yet; run "
            "`hpo-trainer search` until at least one trial completes"
        )
    best = complete[0] if trial is None else _chosen(study, complete, trial)
    attrs = study.user_attrs
    goals = facts.objectives(study)
    record: dict[str, Any] = {
        "format": FORMAT,
        "params": group_params(best.params),
        "value": best.values[0],
        "metric": goals[0][0],
        "direction": goals[0][1],
        **(_multi_part(study, best) if len(goals) > 1 else {}),
        "trial": best.number,
        "epochs": best.user_attrs.get("max_epochs", attrs.get(facts.EPOCHS_KEY)),
        # What made the trial's value: `train` repeats it (epochs, best epoch, seed, threads).
        "recipe": _recipe(study, best),
        "study": study.study_name,
        "storage": mask_url(absolute_url(storage_url)),  # usable from any folder
        "study_file": attrs.get("hpo:study_file"),
        "study_file_sha256": best.user_attrs.get(
            "study_file_sha256", attrs.get("hpo:study_file_sha256")
        ),
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    if top > 1:
        record["top"] = [
            {"trial": t.number, "value": t.values[0], "params": group_params(t.params)}
            | ({"values": t.values} if len(goals) > 1 else {})
            for t in complete[:top]
        ]
    return record


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a params file (see :func:`hpo_trainer.codec.params.read_file`, its one reader)."""
    return read_file(path)


def write(
    record: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    reads: tuple[str | os.PathLike[str] | None, ...] = (),
) -> Path:
    """Write an export record as JSON, atomically (never half-written).

    Args:
        record: The record (see :func:`best_record`).
        path: The file to write; it must end in ``.json``.
        reads: The files the export read (the study's storage file, its study file): ``path``
            may be none of them.

    Returns:
        The path written.

    Raises:
        ConfigError: If ``path`` does not end in ``.json``, is a directory, a file in
            ``reads`` or a SQLite database, or cannot be written; nothing is written then.

    """
    data = json.dumps(record, indent=2, sort_keys=False) + "\n"
    return write_output(data, path, "best.json", reads=reads, suffixes=(".json",))
