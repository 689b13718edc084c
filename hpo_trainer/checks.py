"""Checks of what a user hands a :class:`~hpo_trainer.Trainer`: classes, their signatures,
folder names, callbacks and parameter dicts. Each says what must hold and echoes the value.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hpo_trainer.errors import ConfigError
from hpo_trainer.space import TARGETS
from hpo_trainer.train.callbacks import Callback


def is_positive_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number above 0 (bools are not numbers here)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value > 0
    )


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


def group_params(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Group flat ``{"target.name": v}`` params by target; grouped ones pass through."""
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            grouped.setdefault(key, {}).update(value)
            continue
        target, sep, name = str(key).partition(".")
        if not sep and key in TARGETS:
            raise ConfigError(
                f"params target {key!r} must map names to values, e.g. "
                f"{{{key!r}: {{'lr': 0.01}}}}, got {value!r}"
            )
        if not sep:
            raise ConfigError(
                f"parameter {key!r} has no target; write it as 'optimizer.{key}' or group it "
                f"as {{'optimizer': {{{key!r}: ...}}}}"
            )
        grouped.setdefault(target, {})[name] = value
    return grouped


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
