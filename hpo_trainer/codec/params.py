"""The params codec: searched values as stored (labels, by target) to and from run values.

Stored params are ``{target: {name: label}}`` (or Optuna's flat ``{"target.name": label}``);
a label names an object (``"Adam"``) that the space turns back into the object itself. Run
values are what each target is built with: ``{target: {name: value}}``, searched and fixed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpo_trainer.base.errors import ConfigError, HpoTrainerError, raise_all
from hpo_trainer.space import TARGETS, Hyperparameters


def group_params(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Group flat ``{"target.name": v}`` params by target; grouped ones pass through.

    Raises:
        ConfigError: If a name has no target, or a target does not map names to values.

    """
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


def resolve_params(
    spaces: Mapping[str, Hyperparameters],
    params: Mapping[str, Any] | None = None,
    *,
    best: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Return the values for each target for a run, from ``params`` or the spaces.

    Args:
        spaces: The search spaces, by target.
        params: Searched values, as stored: ``{target: {name: value}}`` or Optuna's flat
            ``{"target.name": value}``. ``None`` uses ``best``, or the fixed values if
            nothing is searched.
        best: The values of the last search's best trial, if there was one.

    Returns:
        ``{target: {name: value}}`` for every target with a space.

    Raises:
        ConfigError: If values are missing or do not fit the spaces.

    """
    if params is None and best is not None:
        return {t: dict(v) for t, v in best.items()}
    if params is None:
        return _fixed_values(spaces)
    if not isinstance(params, Mapping):
        hint = (
            f"; to use a params file, pass params=export.read({str(params)!r})['params']"
            if isinstance(params, (str, os.PathLike))
            else ""
        )
        raise ConfigError(
            "params must be a mapping {target: {name: value}} (or flat "
            f"{{'target.name': value}}), got {type(params).__name__} {params!r}{hint}"
        )
    grouped = group_params(params)
    problems = [
        f"params name a target {t!r} that has no search space (targets with spaces: "
        f"{', '.join(spaces) or 'none'})"
        for t in grouped
        if t not in spaces
    ]
    values = {}
    for target, hyp in spaces.items():
        try:
            values[target] = hyp.decode(grouped.get(target, {}))
        except HpoTrainerError as exc:
            problems.append(str(exc))
    raise_all(problems)
    return values


def _fixed_values(spaces: Mapping[str, Hyperparameters]) -> dict[str, dict[str, Any]]:
    """Return the values of spaces that search nothing (their fixed values)."""
    searched = [f"{t}.{n}" for t, h in spaces.items() for n in h.searched]
    if searched:
        raise ConfigError(
            f"{', '.join(searched)} {'is' if len(searched) == 1 else 'are'} still "
            "searched, so a training run does not know which values to use; run "
            "hyp_opt() first, pass params={...} (e.g. an exported best.json; before "
            "pass_batch: initialize(params={...})), or fix them with set_value()"
        )
    return {t: h.sample(seed=0) for t, h in spaces.items()}


def encode_params(
    spaces: Mapping[str, Hyperparameters], values: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Return the searched part of ``values`` as stored: ``{target: {name: label}}``."""
    return {t: spaces[t].encode(v) for t, v in values.items() if t in spaces}


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a params file as ``export`` writes it (or a bare ``{target: {name: value}}``).

    Returns:
        The record; its ``params`` are grouped by target.

    Raises:
        ConfigError: If the file is missing, is not JSON, or has no params.

    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"params file {str(path)!r} does not exist; create it with `hpo-trainer export "
            "--out best.json`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"params file {str(path)!r} cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"params file {str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno}); "
            "export it again with `hpo-trainer export`"
        ) from None
    except RecursionError:
        raise ConfigError(
            f"params file {str(path)!r} is not valid params JSON: it is too deeply nested; "
            "export it again with `hpo-trainer export`"
        ) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise ConfigError(
            f"params file {str(path)!r} is not valid JSON ({exc}); export it again with "
            "`hpo-trainer export`"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"params file {str(path)!r} must hold a JSON object")
    params = data.get("params", data if "format" not in data else None)
    if not isinstance(params, dict):
        raise ConfigError(f"params file {str(path)!r} has no 'params' object")
    record = dict(data)
    record["params"] = group_params(params)
    return record
