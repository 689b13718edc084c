"""Kept trials' checkpoints and final runs as Optuna artifacts, in a file-system store beside
the study, where optuna-dashboard (``hpo-trainer dashboard``) shows them for download.

* **Where**: ``<folder of the file>/artifacts/`` for a SQLite or journal-file storage (for the
  default ``runs/studies.db``: ``runs/artifacts/``); ``<runs dir>/artifacts/`` for
  PostgreSQL, MySQL or Redis. Workers on several machines share that folder only when it is
  on a shared file system; elsewhere each machine keeps its own trials' artifacts, and the
  dashboard can download only those on its own machine.
* **A kept trial**: when one of the ``keep_checkpoints`` best completed trials ends, the worker
  that ran it attaches its last checkpoint. Optuna refuses to change a finished trial's
  attributes, so the record goes on the *study*, under optuna-dashboard's key for a trial's
  artifact (``dashboard:artifacts:<trial id>:<artifact id>``), where the dashboard lists it on
  the trial and where it can be removed again: when the trial's checkpoint is cleaned up, its
  file leaves the store and its record becomes ``null`` (as the dashboard's own delete does).
  Every clean-up removes all artifacts of the trials it frees, whichever worker attached
  them, so the store holds at most ``keep_checkpoints`` checkpoints per study.
* **A final run**: its ``summary.json`` and model files, attached to the study through
  :func:`optuna.artifacts.upload_artifact` (listed by
  :func:`optuna.artifacts.get_all_artifact_meta`); hpo-trainer never removes them.

The store failing (a full disk, a folder without rights) is logged as a warning and never
stops a search or a run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

from hpo_trainer.search import facts, optuna_api
from hpo_trainer.search.storage import mask_url, open_storage, parse_url

logger = logging.getLogger(__name__)

#: The store's folder name, beside the study.
DIRNAME = "artifacts"
#: optuna-dashboard's study attribute prefix of a trial's artifact (``<prefix><trial id>:<id>``).
TRIAL_PREFIX = "dashboard:artifacts:"
#: Marks the records this module writes (others under the prefix are never touched).
_MARK = {"hpo_trainer": "checkpoint"}


def store_dir(storage_url: str, runs_dir: str | os.PathLike[str]) -> Path:
    """Return the artifact store's folder for a study in ``storage_url``.

    Args:
        storage_url: The study's storage URL.
        runs_dir: The runs folder: the store's parent for a storage that is not a file.

    Returns:
        ``artifacts/`` beside a SQLite or journal file, else ``runs_dir/artifacts``.

    """
    path = parse_url(storage_url).path
    return (path.parent if path is not None else Path(runs_dir)) / DIRNAME


def open_store(folder: str | os.PathLike[str]) -> FileSystemArtifactStore:
    """Return the file-system artifact store in ``folder``, creating the folder."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(folder)


def checkpoint_name(number: int) -> str:
    """Return the download name of trial ``number``'s checkpoint."""
    return f"trial-{number}-last.pt"


def attach_checkpoint(
    study: optuna.Study, trial_id: int, number: int, path: Path, folder: Path
) -> str | None:
    """Attach a finished trial's checkpoint file to the study as that trial's artifact.

    Args:
        study: The study.
        trial_id: The storage id of the (finished) trial to list it on.
        number: The trial's first-attempt number (its folder's name).
        path: The checkpoint file.
        folder: The artifact store's folder.

    Returns:
        The artifact id, or ``None`` when the store failed (logged as a warning).

    """
    artifact_id = str(uuid.uuid4())
    store = None
    try:
        store = open_store(folder)
        with open(path, "rb") as f:  # the file first: a listed artifact is always there
            store.write(artifact_id, f)
        meta = {
            "artifact_id": artifact_id,
            "filename": checkpoint_name(number),
            "mimetype": "application/octet-stream",
            "encoding": None,
            **_MARK,
        }
        key = f"{TRIAL_PREFIX}{trial_id}:{artifact_id}"
        optuna_api.set_study_record(study, key, meta)
    except Exception as exc:
        logger.warning(
            "trial %d: its checkpoint %s was not attached as an artifact in %s (%s); the "
            "search goes on",
            number,
            path,
            folder,
            exc,
        )
        if store is not None:
            with contextlib.suppress(Exception):  # a partial file, if the write failed
                _remove_file(store, artifact_id)
        return None
    return artifact_id


def trial_artifacts(study: optuna.Study) -> dict[int, list[dict[str, Any]]]:
    """Return the live checkpoint artifacts this module attached, by trial id."""
    found: dict[int, list[dict[str, Any]]] = {}
    for key, value in optuna_api.study_records(study).items():
        meta = _ours(key, value)
        if meta is not None:
            trial_id = int(key[len(TRIAL_PREFIX) :].partition(":")[0])
            found.setdefault(trial_id, []).append(meta)
    return found


def detach_checkpoints(
    study: optuna.Study,
    trials: Iterable[optuna.trial.FrozenTrial],
    numbers: set[int],
    folder: Path,
) -> int:
    """Remove the checkpoint artifacts of the trials whose first attempt is in ``numbers``.

    Args:
        study: The study.
        trials: Its finished trials (to map trial ids to first-attempt numbers).
        numbers: First-attempt numbers whose checkpoints are cleaned up.
        folder: The artifact store's folder.

    Returns:
        How many artifacts were removed (a failure is logged as a warning).

    """
    if not numbers:
        return 0
    root = {optuna_api.trial_id(t): facts.first_attempt(t) for t in trials}
    store = FileSystemArtifactStore(folder)
    removed = 0
    try:
        for trial_id, metas in trial_artifacts(study).items():
            if root.get(trial_id) not in numbers:
                continue
            for meta in metas:
                _remove_file(store, meta["artifact_id"])
                key = f"{TRIAL_PREFIX}{trial_id}:{meta['artifact_id']}"
                optuna_api.set_study_record(study, key, None)
                removed += 1
    except Exception as exc:
        logger.warning("checkpoint artifacts in %s were not all removed (%s)", folder, exc)
    return removed


def renumber(source: optuna.Study, target: optuna.Study) -> int:
    """Point a copied study's checkpoint artifacts at the target's trials.

    ``optuna.copy_study`` copies the study's attributes as they are, but its trials get new
    ids in the target; each record is moved to the key of the trial with the same number,
    and the copied key is cleared (so no other trial of the target shows it). The files stay
    in the source's store: a target whose store is another folder lists them until a
    clean-up removes them, and their downloads fail.

    Returns:
        How many records were moved.

    """
    numbers = {optuna_api.trial_id(t): t.number for t in source.get_trials(deepcopy=False)}
    ids = {t.number: optuna_api.trial_id(t) for t in target.get_trials(deepcopy=False)}
    moved = 0
    for old_id, metas in trial_artifacts(target).items():
        new_id = ids.get(numbers.get(old_id, -1))
        if new_id == old_id:
            continue
        for meta in metas:
            old_key = f"{TRIAL_PREFIX}{old_id}:{meta['artifact_id']}"
            optuna_api.set_study_record(target, old_key, None)
            if new_id is not None:
                new_key = f"{TRIAL_PREFIX}{new_id}:{meta['artifact_id']}"
                optuna_api.set_study_record(target, new_key, meta)
                moved += 1
    return moved


def attach_run(
    storage_url: str,
    study_name: str,
    files: Iterable[str | os.PathLike[str]],
    *,
    runs_dir: str | os.PathLike[str],
) -> list[str]:
    """Attach a final run's files (summary, model) to its study as study artifacts.

    Args:
        storage_url: The study's storage URL.
        study_name: The study the run's params came from.
        files: The files to attach (named ``<run folder>-<file name>`` for download).
        runs_dir: The runs folder (where the store is for a storage that is not a file).

    Returns:
        The artifact ids; none when the study or the store failed (logged as a warning).

    """
    ids = []
    try:
        storage = open_storage(storage_url, must_exist=True)
        study = optuna.load_study(study_name=study_name, storage=storage)
        store = open_store(store_dir(storage_url, runs_dir))
        for path in map(Path, files):
            ids.append(_upload_named(store, study, path, f"{path.parent.name}-{path.name}"))
    except Exception as exc:
        logger.warning(
            "the run's files were not attached to study %r in %s (%s)",
            study_name,
            mask_url(storage_url),
            exc,
        )
    return ids


def _upload_named(
    store: FileSystemArtifactStore, study: optuna.Study, path: Path, name: str
) -> str:
    """Upload ``path`` as a study artifact whose download name is ``name``."""
    # upload_artifact names the artifact after the file: hand it a link of the wanted name.
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".artifact-") as tmp:
        named = Path(tmp) / name
        try:
            os.link(path, named)
        except OSError:  # a file system without hard links
            shutil.copyfile(path, named)
        return optuna.artifacts.upload_artifact(
            artifact_store=store,
            file_path=str(named),
            study_or_trial=study,
            # mimetypes guesses odd types for .pt (a SNES page table)
            mimetype="application/json" if path.suffix == ".json" else "application/octet-stream",
        )


def _ours(key: str, value: Any) -> dict[str, Any] | None:
    if not key.startswith(TRIAL_PREFIX) or not isinstance(value, str):
        return None
    try:
        meta = json.loads(value)
    except ValueError:
        return None
    if not isinstance(meta, Mapping) or meta.get("hpo_trainer") != _MARK["hpo_trainer"]:
        return None
    return dict(meta)


def _remove_file(store: FileSystemArtifactStore, artifact_id: str) -> None:
    try:
        store.remove(artifact_id)
    except ArtifactNotFound:  # another worker removed it first
        pass
