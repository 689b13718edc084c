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
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.pruners import BasePruner
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial, Trial, TrialState


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
    """Read :func:`read_trials_since` from a database's tables, in one statement (see there).

    The attributes come by outer joins that match only unfinished trials (system) and
    failed ones (user), so a trial brings at most one row per key.
    """
    import sqlalchemy as sa
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    t = models.TrialModel.__table__
    sys_a = models.TrialSystemAttributeModel.__table__
    user_a = models.TrialUserAttributeModel.__table__
    picked = t.c.trial_id > after
    if among:
        picked = sa.or_(picked, t.c.trial_id.in_(sorted(among)))
    unfinished = t.c.state.in_([TrialState.RUNNING, TrialState.WAITING])
    joined = t.outerjoin(
        sys_a, sa.and_(sys_a.c.trial_id == t.c.trial_id, sys_a.c.key.in_(system_keys), unfinished)
    ).outerjoin(
        user_a,
        sa.and_(
            user_a.c.trial_id == t.c.trial_id,
            user_a.c.key.in_(user_keys),
            t.c.state == TrialState.FAIL,
        ),
    )
    query = (
        sa.select(t.c.trial_id, t.c.number, t.c.state)
        .add_columns(sys_a.c.key, sys_a.c.value_json, user_a.c.key, user_a.c.value_json)
        .select_from(joined)
        .where(t.c.study_id == study_id, picked)
        .order_by(t.c.trial_id)
    )
    trials: dict[int, FrozenTrial] = {}
    with _reading(storage.engine) as conn:
        for tid, number, state, s_key, s_json, u_key, u_json in conn.execute(query):
            trial = trials.get(tid)
            if trial is None:
                trial = trials[tid] = _lean_trial(tid, number, state)
            if s_key is not None:
                trial.system_attrs[s_key] = json.loads(s_json)
            if u_key is not None:
                trial.user_attrs[u_key] = json.loads(u_json)
    return list(trials.values())


def _lean_trial(trial_id: int, number: int, state: TrialState) -> FrozenTrial:
    """Return a trial with only its id, number and state (its attributes filled by the caller)."""
    from optuna.trial import FrozenTrial

    return FrozenTrial(
        number=number,
        state=state,
        value=None,
        datetime_start=None,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=trial_id,
    )


def _reading(engine: Any) -> Any:
    """Return a connection for one read.

    On PostgreSQL it reads outside a transaction (no BEGIN, no ROLLBACK: two round trips
    fewer); on SQLite in the storage's own transactions.
    """
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
    return conn


def create_running_trial(
    storage: BaseStorage,
    study_id: int,
    *,
    known: int,
    after: int,
    system_attrs: Mapping[str, Any] | None = None,
) -> int:
    """Create a RUNNING trial in the study, with its system attributes; return its id.

    Optuna numbers a new trial by counting every earlier trial of its study, which at 100,000
    trials takes 20 ms on PostgreSQL, and its ORM session costs milliseconds more. On a
    database this numbers the trial from what the caller has read instead: ``known`` trials
    up to the id ``after``, plus those created since (counted by id past ``after``, in the
    insert itself), and writes the row and its attributes in one transaction of three
    statements. Like Optuna,
    it first locks the study's row (SQLite: its write transaction), so that every creator
    gives ids and numbers in one order; the row's values go through Optuna's model (its
    start time in the form its version stores).

    Args:
        storage: The storage behind Optuna's cache (:func:`backend_of`).
        study_id: The study's id in it.
        known: How many of the study's trials have an id up to ``after``.
        after: The greatest trial id the caller has read (``-1``: none; Optuna counts).
        system_attrs: The trial's system attributes (JSON-serialisable values).

    Returns:
        The new trial's id.

    """
    from optuna.storages import RDBStorage

    attrs = dict(system_attrs or {})
    if not isinstance(storage, RDBStorage) or after < 0:
        new_id = storage.create_new_trial(study_id)
        for key, value in attrs.items():
            storage.set_trial_system_attr(new_id, key, value)
        return new_id
    return _create_rdb(storage, study_id, known, after, attrs)


def _create_rdb(storage: Any, study_id: int, known: int, after: int, attrs: dict[str, Any]) -> int:
    """Create :func:`create_running_trial`'s trial in a database's tables (see there)."""
    import datetime

    import sqlalchemy as sa
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    t, a = models.TrialModel, models.TrialSystemAttributeModel
    with storage.engine.begin() as conn:
        conn.execute(
            sa.select(models.StudyModel.study_id)
            .where(models.StudyModel.study_id == study_id)
            .with_for_update()
        )
        since = sa.select(sa.func.count(t.trial_id)).where(
            t.study_id == study_id, t.trial_id > after
        )
        row = _column_values(
            t,
            study_id=study_id,
            number=known + since.scalar_subquery(),  # counted once the study's row is locked
            state=TrialState.RUNNING,
            datetime_start=datetime.datetime.now(),
        )
        new_id = conn.execute(sa.insert(t.__table__).values(row)).inserted_primary_key[0]
        for key, value in attrs.items():
            values = {"trial_id": new_id, "key": key, "value_json": json.dumps(value)}
            conn.execute(sa.insert(a.__table__).values(values))
    return new_id


def _column_values(model: Any, **fields: Any) -> dict[str, Any]:
    """Return the table's column values of a ``model`` row made with ``fields``.

    The model converts what it is given as Optuna stores it (5.x keeps start times in UTC,
    4.x in local time): the values are read back from the object, column by column.
    """
    import sqlalchemy as sa

    obj = model(**fields)
    return {
        prop.columns[0].name: getattr(obj, prop.key)
        for prop in sa.inspect(model).column_attrs
        if prop.key in obj.__dict__
    }


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
