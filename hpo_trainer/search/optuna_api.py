"""The one adapter over Optuna's private internals.

Optuna's public API has no way to reach a study's storage, a trial's storage id or the study's
system attributes, and the engine needs all three (our heartbeat, the artifact records, fast
pruning decisions, warm starts under the budget lock). Every use of an Optuna ``_`` attribute
lives here, and nowhere else in the package (``tests/test_optuna_contract.py`` checks both:
that no other module touches them, and that each function below still behaves on the lowest
and the highest Optuna the project allows).

Only Optuna and the standard library are imported, so the contract tests can load this module
alone under another Optuna version.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial, Trial


def storage_of(study: optuna.Study) -> BaseStorage:
    """Return the storage the study reads and writes (Optuna's cache in front of a database)."""
    return study._storage


def backend_of(study: optuna.Study) -> BaseStorage:
    """Return the storage behind Optuna's cache: what locks and raw reads must talk to."""
    storage = study._storage
    return getattr(storage, "_backend", storage)


def study_id(study: optuna.Study) -> int:
    """Return the study's id in its storage."""
    return study._study_id


def trial_id(trial: Trial | FrozenTrial) -> int:
    """Return a trial's id in its storage (unique across studies, unlike its number)."""
    return trial._trial_id


def stored_trial(study: optuna.Study, trial: Trial | FrozenTrial) -> FrozenTrial:
    """Return the trial as the storage has it now (its states, attributes and reports)."""
    return study._storage.get_trial(trial._trial_id)


def report_value(study: optuna.Study, trial: Trial | FrozenTrial, step: int, value: float) -> None:
    """Store an intermediate value (what ``Trial.report`` does; it refuses several objectives)."""
    study._storage.set_trial_intermediate_value(trial._trial_id, step, float(value))


def study_records(study: optuna.Study) -> dict[str, Any]:
    """Return the study's system attributes (our records: artifacts, heartbeat marks)."""
    return study._storage.get_study_system_attrs(study._study_id)


def set_study_record(study: optuna.Study, key: str, value: Any) -> None:
    """Write one study system attribute as JSON text (``None`` clears a record's meaning)."""
    study._storage.set_study_system_attr(study._study_id, key, json.dumps(value))
