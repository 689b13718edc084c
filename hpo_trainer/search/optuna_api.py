"""The one adapter over Optuna's private internals.

Optuna's public API has no way to reach a study's storage, a trial's storage id or the study's
system attributes, and the engine needs all three (our heartbeat, the artifact records, fast
pruning decisions, warm starts under the budget lock), and the trial-start path needs Optuna's
tables and its cache (a study's trials read a few at a time, a trial created without counting
the study, a trial opened without ``study.ask()``: :mod:`hpo_trainer.search.start`). Every use
of an Optuna ``_`` attribute or table lives here, and nowhere else in the package
(``tests/test_optuna_contract.py`` checks both: that no other module touches them, and that
each function below still behaves on the lowest and the highest Optuna the project allows).

Only Optuna and the standard library are imported (and SQLAlchemy, on which Optuna's database
storage is built, inside the functions that read its tables), so the contract tests can load
this module alone under another Optuna version.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.pruners import BasePruner
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial, Trial


def storage_of(study: optuna.Study) -> BaseStorage:
    """Return the storage the study reads and writes (Optuna's cache in front of a database)."""
    return study._storage


def backend_of(study: optuna.Study) -> BaseStorage:
    """Return the storage behind Optuna's cache: what locks and raw reads must talk to.

    Only the cache is looked through: a journal storage's own backend (its file or Redis
    connection) is not a storage.
    """
    from optuna.storages._cached_storage import _CachedStorage

    storage = study._storage
    return storage._backend if isinstance(storage, _CachedStorage) else storage


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


def wrapped_pruner(pruner: BasePruner) -> BasePruner | None:
    """Return the pruner a ``PatientPruner`` wraps (``None``: it wraps none)."""
    return getattr(pruner, "_wrapped_pruner", None)


#: At most this many trial ids in one ``IN (...)`` list (SQLite limits a statement's variables).
_IDS_PER_QUERY = 500


def read_trials_since(
    storage: BaseStorage,
    study_id: int,
    *,
    after: int,
    among: Collection[int] = (),
    user_keys: Sequence[str] = (),
    system_keys: Sequence[str] = (),
) -> list[FrozenTrial]:
    """Return the study's trials with ids past ``after`` or in ``among``, by id.

    A database is read lean, from its tables: the trials' ids, numbers and states, the
    ``user_keys`` of failed trials and the ``system_keys`` of unfinished ones, and nothing
    else (their params, values and reports are left empty), in two or three statements whose
    cost grows with the trials returned, not with the study. Another storage (a journal file
    or Redis, which replay their log in memory) gives its full trials.

    Args:
        storage: The storage behind Optuna's cache (:func:`backend_of`).
        study_id: The study's id in it.
        after: Return the trials whose id is greater (``-1``: every trial).
        among: Also return these trials (those the caller saw unfinished).
        user_keys: The user attributes to read of failed trials.
        system_keys: The system attributes to read of running and waiting trials.

    Returns:
        The trials, in the order of their ids.

    """
    from optuna.storages import RDBStorage

    if isinstance(storage, RDBStorage):
        return _read_rdb(storage, study_id, after, set(among), user_keys, system_keys)
    wanted = set(among)
    return [
        t
        for t in storage.get_all_trials(study_id, deepcopy=False)
        if t._trial_id > after or t._trial_id in wanted
    ]


def _read_rdb(
    storage: Any,
    study_id: int,
    after: int,
    among: set[int],
    user_keys: Sequence[str],
    system_keys: Sequence[str],
) -> list[FrozenTrial]:
    """Read :func:`read_trials_since` from a database's tables (see there)."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models
    from optuna.trial import FrozenTrial, TrialState

    t = models.TrialModel
    picked = t.trial_id > after
    if among:
        picked = sa.or_(picked, t.trial_id.in_(sorted(among)))
    query = sa.select(t.trial_id, t.number, t.state).where(t.study_id == study_id, picked)
    with storage.engine.connect() as conn:
        rows = conn.execute(query.order_by(t.trial_id)).all()
        failed = [r[0] for r in rows if r[2] == TrialState.FAIL]
        unfinished = [r[0] for r in rows if not r[2].is_finished()]
        user = _attrs_of(conn, models.TrialUserAttributeModel, failed, user_keys)
        system = _attrs_of(conn, models.TrialSystemAttributeModel, unfinished, system_keys)
    return [
        FrozenTrial(
            number=number,
            state=state,
            value=None,
            datetime_start=None,
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs=user.get(tid, {}),
            system_attrs=system.get(tid, {}),
            intermediate_values={},
            trial_id=tid,
        )
        for tid, number, state in rows
    ]


def _attrs_of(
    conn: Any, model: Any, ids: list[int], keys: Sequence[str]
) -> dict[int, dict[str, Any]]:
    """Return ``{trial id: {key: value}}`` of the attribute table ``model``, for ``keys``."""
    import sqlalchemy as sa

    found: dict[int, dict[str, Any]] = {}
    if not keys:
        return found
    for start in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[start : start + _IDS_PER_QUERY]
        query = sa.select(model.trial_id, model.key, model.value_json).where(
            model.trial_id.in_(chunk), model.key.in_(list(keys))
        )
        for tid, key, text in conn.execute(query):
            found.setdefault(tid, {})[key] = json.loads(text)
    return found


def create_running_trial(storage: BaseStorage, study_id: int, *, known: int, after: int) -> int:
    """Create a RUNNING trial in the study and return its id.

    Optuna numbers a new trial by counting every earlier trial of its study, which at 100,000
    trials takes 20 ms on PostgreSQL. On a database this numbers it from what the caller has
    read instead: ``known`` trials up to the id ``after``, plus those created since (counted
    by id, from the ``after`` on). Like Optuna, it first locks the study's row (SQLite: its
    write transaction), so that every creator gives ids and numbers in one order.

    Args:
        storage: The storage behind Optuna's cache (:func:`backend_of`).
        study_id: The study's id in it.
        known: How many of the study's trials have an id up to ``after``.
        after: The greatest trial id the caller has read (``-1``: none; Optuna counts).

    Returns:
        The new trial's id.

    """
    import datetime

    import sqlalchemy as sa
    from optuna.storages import RDBStorage
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.trial import TrialState

    if not isinstance(storage, RDBStorage) or after < 0:
        return storage.create_new_trial(study_id)
    t = models.TrialModel
    with _create_scoped_session(storage.scoped_session) as session:
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        since = sa.select(sa.func.count(t.trial_id)).where(
            t.study_id == study_id, t.trial_id > after
        )
        trial = t(
            study_id=study_id,
            number=known + session.scalar(since),
            state=TrialState.RUNNING,
            datetime_start=datetime.datetime.now(),
        )
        session.add(trial)
        session.flush()
        new_id = trial.trial_id
    return new_id


def open_trial(study: optuna.Study, trial_id: int) -> Trial:
    """Return the ``Trial`` of a RUNNING trial that was started without ``study.ask()``.

    What ``ask()`` does after it has its trial: the sampler's copy of the study's trials
    (kept for one trial) is dropped, the ``Trial`` is made (the sampler's ``before_trial``
    runs), and Optuna's cache in front of a database learns the trial, which it needs to
    store the trial's parameters.

    Args:
        study: The study, with its sampler.
        trial_id: The trial's id (:func:`create_running_trial`, or a claimed waiting trial).

    Returns:
        The trial, ready for its ``suggest_*`` calls.

    """
    import copy

    import optuna
    from optuna.storages._cached_storage import _CachedStorage, _StudyInfo

    study._thread_local.cached_all_trials = None
    trial = optuna.Trial(study, trial_id)
    cache = study._storage
    if isinstance(cache, _CachedStorage):
        frozen = copy.deepcopy(trial._cached_frozen_trial)
        with cache._lock:
            info = cache._studies.setdefault(study._study_id, _StudyInfo())
            cache._add_trials_to_cache(study._study_id, [frozen])
            info.unfinished_trial_ids.add(trial_id)
    return trial
