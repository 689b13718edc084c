"""Checks of what a user hands a :class:`~hpo_trainer.Trainer`: its arguments, classes and
their signatures, primed arguments and search spaces, folder names and callbacks.

Each check says what must hold, echoes the bad value and offers the fix; the ``*_problems``
functions return every problem found, for one :func:`~hpo_trainer.base.errors.raise_all`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hpo_trainer.base.errors import (
    ConfigError,
    DataError,
    HpoTrainerError,
    did_you_mean,
    is_int,
    is_real,
    is_seed,
    raise_all,
)
from hpo_trainer.space import CLASS, Hyperparameters
from hpo_trainer.space.dimensions import CategoricalDim
from hpo_trainer.train import data
from hpo_trainer.train.callback import Callback
from hpo_trainer.train.devices import resolve_device

#: Leading positional arguments a target receives from the trainer, never from the user.
_SUPPLIED = {"optimizer": 1, "scheduler": 1, "model": 0, "criterion": 0}
#: The names a loader space may search.
_LOADER_NAMES = ("batch_size",)


def is_positive_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number above 0 (bools are not numbers here)."""
    return is_real(value, finite=True) and value > 0  # type: ignore[operator]


def seed_problem(seed: Any) -> str | None:
    """Say why ``seed`` is neither a seed (:func:`~hpo_trainer.base.errors.is_seed`) nor ``None``.

    The trainer's seed and a run's share this rule, so any seed a run records can be
    given again to repeat it.
    """
    if seed is None or is_seed(seed):
        return None
    return f"seed must be an integer from 0 to 2**32 - 1, or None, got {seed!r}"


def folder_name_problem(arg: str, value: Any) -> str | None:
    """Say why ``value`` cannot name a folder inside ``runs_dir``, or return ``None``."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or "/" in value
        or "\\" in value
        or "\0" in value
    ):
        return (
            f"{arg} must be a non-empty string without '/' (it names a folder inside "
            f"runs_dir), got {value!r}"
        )
    return None


def callback_problems(callbacks: Any) -> list[str]:
    """Say which of ``callbacks`` are not :class:`Callback` objects (empty if all are)."""
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Sequence):
        return [f"callbacks must be a list of Callback objects, got {callbacks!r}"]
    return [
        f"callbacks must be instances of hpo_trainer.Callback (subclass it and override "
        f"on_epoch_end etc.), but item {i} is {type(cb).__name__} {cb!r}"
        for i, cb in enumerate(callbacks)
        if not isinstance(cb, Callback)
    ]


def check_class(target: str, value: Any) -> Any:
    """Return ``value`` if it can build ``target`` each run (a class or a factory), or None.

    Raises:
        ConfigError: If ``value`` is a name, an instance or anything else not callable.

    """
    if value is None:
        return None
    if isinstance(value, str):
        raise ConfigError(
            f"set_{target} takes a class, not its name: got the string {value!r}; import "
            f"it and pass the class itself, e.g. set_{target}({value.rpartition('.')[2]})"
        )
    built = (nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)
    if target != "criterion" and isinstance(value, built):
        cls = type(value).__name__
        raise ConfigError(
            f"set_{target} takes the {target} class, which is built fresh for every run, "
            f"not an instance: got a {cls} object; pass {cls} and give its arguments with "
            f"prime_{target}(...)"
        )
    if not callable(value):
        raise ConfigError(
            f"set_{target} takes a class (or a function building the {target}), got "
            f"{type(value).__name__} {value!r}"
        )
    return value


def label_of(cls: Any) -> str:
    """Return a class's name as users write it (``SGD``, ``Net``)."""
    return getattr(cls, "__qualname__", None) or getattr(cls, "__name__", None) or repr(cls)


def keyword_names(cls: Any, supplied: int) -> list[str] | None:
    """Names ``cls`` accepts as keywords after ``supplied`` leading positionals, or None."""
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    taken = {p.name for p in positional[:supplied]}
    return [
        p.name
        for p in params
        if p.name not in taken
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]


# -- the Trainer's arguments -------------------------------------------------------------


def check_datasets(train: Any, val: Any, test: Any) -> None:
    """Check the train set and the optional validation and test sets.

    Raises:
        DataError: Listing every set that cannot be used, and why.

    """
    problems = []
    for split, ds in (("train", train), ("val", val), ("test", test)):
        if ds is None and split != "train":
            continue
        try:
            data.check_dataset(ds, split)
        except HpoTrainerError as exc:
            problems.append(str(exc))
    raise_all(problems, DataError)


def check_trainer_args(
    datasets: tuple[Any, Any, Any], *, device: Any, **options: Any
) -> torch.device:
    """Check the :class:`~hpo_trainer.Trainer` arguments and return the device to use.

    Args:
        datasets: The train, validation and test sets.
        device: The device asked for (see :func:`~hpo_trainer.train.devices.resolve_device`).
        **options: The other keyword arguments checked by :func:`trainer_problems`.

    Returns:
        The resolved device.

    Raises:
        DataError: If a dataset cannot be used.
        ConfigError: Listing every other problem.

    """
    check_datasets(*datasets)
    problems = trainer_problems(**options)
    try:
        resolved = resolve_device(device)
    except ConfigError as exc:
        raise_all([*problems, str(exc)])
        raise  # not reached: raise_all raised for the device problem
    raise_all(problems)
    return resolved


def trainer_problems(
    *,
    batch_size: Any,
    grad_clip: Any,
    name: Any,
    runs_dir: Any,
    amp: Any,
    seed: Any,
    num_workers: Any,
) -> list[str]:
    """Say what is wrong with the :class:`~hpo_trainer.Trainer` keyword arguments."""
    problems = []
    if not is_int(batch_size, 1):
        problems.append(f"batch_size must be a positive integer, got {batch_size!r}")
    if grad_clip is not None and not is_positive_number(grad_clip):
        problems.append(f"grad_clip must be a positive number or None, got {grad_clip!r}")
    problems.extend(p for p in [folder_name_problem("name", name)] if p)
    if not isinstance(runs_dir, (str, os.PathLike)) or not str(runs_dir).strip():
        problems.append(
            f"runs_dir must be a folder path (a str or Path), got {runs_dir!r}; the "
            "default is 'runs'"
        )
    if not (amp is None or isinstance(amp, bool) or amp in ("bf16", "fp16")):
        problems.append(f"amp must be True, False, 'bf16' or 'fp16', got {amp!r}")
    problems.extend(p for p in [seed_problem(seed)] if p)
    if not is_int(num_workers, 0):
        problems.append(
            f"num_workers must be an integer >= 0 (0 loads batches in this process), "
            f"got {num_workers!r}"
        )
    return problems


def train_problems(
    *,
    epochs: Any,
    update_every: Any,
    save_every: Any,
    resume: Any,
    run_name: Any,
    callbacks: Any,
) -> list[str]:
    """Say what is wrong with the arguments of :meth:`~hpo_trainer.Trainer.train`."""
    problems = [
        f"{arg} must be an integer >= 1, got {value!r}"
        for arg, value in (("epochs", epochs), ("update_every", update_every))
        if not is_int(value, 1)
    ]
    if save_every is not None and not is_int(save_every, 1):
        problems.append(f"save_every must be an integer >= 1 or None, got {save_every!r}")
    if not isinstance(resume, (bool, str, os.PathLike)):
        problems.append(
            f"resume must be False, True (the newest run) or a run folder path, got {resume!r}"
        )
    if run_name is not None:
        problems.extend(p for p in [folder_name_problem("run_name", run_name)] if p)
    problems.extend(callback_problems(callbacks))
    return problems


def keep_problems(*, keep: Any, monitor: Any, seed: Any) -> list[str]:
    """Say what is wrong with ``keep``, ``monitor`` and ``seed`` of ``Trainer.train``."""
    problems = []
    if keep not in ("best", "last"):
        problems.append(f"keep must be 'best' (the best epoch's weights) or 'last', got {keep!r}")
    directions = ("min", "max", "minimize", "maximize")
    if monitor is not None and not (
        isinstance(monitor, (tuple, list))
        and len(monitor) == 2
        and isinstance(monitor[0], str)
        and monitor[1] in directions
    ):
        problems.append(
            f"monitor must be a (metric, direction) pair such as ('val/loss', 'min') or "
            f"('val/acc', 'max'), got {monitor!r}"
        )
    problems.extend(p for p in [seed_problem(seed)] if p)
    if monitor is not None and str(monitor[0]).startswith("test/"):
        problems.append(
            f"monitor must not be a test metric ({monitor[0]!r}): choosing the epoch on the "
            "test set makes its test metrics look better than they are; use a val/ metric"
        )
    return problems


# -- the configuration: classes, primed arguments and spaces -----------------------------


def config_problems(
    classes: Mapping[str, Any],
    primed: Mapping[str, tuple[tuple, dict]],
    spaces: Mapping[str, Hyperparameters],
) -> list[str]:
    """Say everything that keeps this configuration from building a run.

    Args:
        classes: The class (or factory) set for each target, ``None`` where unset.
        primed: The primed ``(args, kwargs)`` of each target.
        spaces: The search spaces, by target.

    Returns:
        One sentence per problem; empty if the configuration can build runs.

    """
    problems: list[str] = []
    for target in ("model", "optimizer", "criterion"):
        if classes[target] is None and not space_chooses_class(spaces.get(target)):
            problems.append(
                f"no {target} is set; call set_{target}(...) before training or searching"
            )
    for target, hyp in spaces.items():
        try:
            hyp.validate()
        except HpoTrainerError as exc:
            problems.append(f"{target} space: {exc}")
            continue
        problems.extend(_name_problems(target, hyp, classes[target], primed[target]))
    problems.extend(_primed_problems(classes, primed, spaces))
    return problems


def space_chooses_class(hyp: Hyperparameters | None) -> bool:
    """Whether the space ``hyp`` searches or fixes its target's class."""
    return hyp is not None and (CLASS in hyp.searched or CLASS in hyp.fixed)


def _candidate_classes(hyp: Hyperparameters | None, cls: Any) -> list[Any]:
    """Return the classes a target may be built from: chosen in ``hyp``, else ``cls``."""
    if hyp is not None and CLASS in hyp.searched:
        dim = hyp.searched[CLASS]
        return list(dim.choices) if isinstance(dim, CategoricalDim) else []
    if hyp is not None and CLASS in hyp.fixed:
        return [hyp.fixed[CLASS]]
    return [cls] if cls is not None else []


def _primed_problems(
    classes: Mapping[str, Any],
    primed: Mapping[str, tuple[tuple, dict]],
    spaces: Mapping[str, Hyperparameters],
) -> list[str]:
    """Primed keywords that a class set (or searched) for their target does not take."""
    problems = []
    for target in ("model", "optimizer", "scheduler", "criterion"):
        args, kwargs = primed[target]
        for cls in _candidate_classes(spaces.get(target), classes[target]):
            if not isinstance(cls, type) and target == "criterion":
                continue  # an instance or function is used as it is, unprimed
            accepted = keyword_names(cls, _SUPPLIED.get(target, 0) + len(args))
            for name in kwargs:
                if accepted is not None and name not in accepted:
                    problems.append(
                        f"prime_{target}({name}=...): {name!r} is not an argument of "
                        f"{target} {label_of(cls)} (it takes "
                        f"{', '.join(accepted) or 'none'})." + did_you_mean(name, accepted)
                    )
    return problems


def _name_problems(
    target: str, hyp: Hyperparameters, cls: Any, primed: tuple[tuple, dict]
) -> list[str]:
    """Names in the space of ``target`` that are primed too, or that its class does not take."""
    problems = []
    args, kwargs = primed
    for name in hyp.names:
        if name == CLASS:
            continue
        if name in kwargs:
            problems.append(
                f"{target} argument {name!r} is both in the search space and given to "
                f"prime_{target}({name}=...); use one: set_value({name!r}, ...) or the "
                "prime keyword"
            )
        if target == "loader":
            if name not in _LOADER_NAMES:
                problems.append(
                    f"the loader space only takes {', '.join(_LOADER_NAMES)}, got "
                    f"{name!r}." + did_you_mean(name, _LOADER_NAMES)
                )
            continue
        when = hyp.conditions(name).get(CLASS)
        for candidate in _candidate_classes(hyp, cls):
            if when is not None and label_of(candidate) not in when:
                continue
            accepted = keyword_names(candidate, _SUPPLIED.get(target, 0) + len(args))
            if accepted is not None and name not in accepted:
                problems.append(
                    f"{name!r} is not an argument of {target} {label_of(candidate)} (it "
                    f"takes {', '.join(accepted) or 'none'})." + did_you_mean(name, accepted)
                )
    return problems
