"""Study files: Python modules in ``studies/`` that say what to train and search.

A study file defines ``make_trainer(**options) -> Trainer`` (cheap to call: workers import
the file and call it), and optionally ``SEARCH`` and ``TRAIN`` dicts of default options for
``hpo-trainer search`` and ``hpo-trainer train``, and the evaluation transform that
``hpo-trainer predict`` applies to image folders (a module-level ``EVAL_TRANSFORM``, or
``make_transform()`` returning one). A study file is code: loading it runs it with your
rights.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from hpo_trainer.base.errors import ConfigError, HpoTrainerError
from hpo_trainer.facade.trainer import Trainer


def load_module(path: str | Path) -> ModuleType:
    """Import a study file by path.

    Raises:
        ConfigError: If the file is missing, is not Python, or fails to import.

    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {str(path)!r} does not exist; give the path to a .py file")
    if path.suffix != ".py":
        raise ConfigError(f"study file {str(path)!r} must be a Python file ending in .py")
    name = f"hpo_study_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import study file {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    # Registered so that pickling classes defined in the file works within this process.
    sys.modules[name] = module
    # As for a script run with python: modules beside the study file can be imported.
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.append(folder)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(
            f"study file {str(path)!r} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def load_trainer_from_file(path: str | Path, **options: Any) -> Trainer:
    """Import a study file and build its trainer with ``make_trainer(**options)``.

    Args:
        path: The study file.
        **options: Keyword options for ``make_trainer`` (``runs_dir``, ``quiet``, ...).

    Returns:
        The trainer, with :attr:`~hpo_trainer.Trainer.factory` set so that worker processes
        rebuild it by importing the file again.

    Raises:
        ConfigError: If the file has no ``make_trainer``, it does not take the options,
            it raises (other than an hpo-trainer error, which passes through), or it does
            not return a Trainer.

    """
    module = load_module(path)
    make = getattr(module, "make_trainer", None)
    if not callable(make):
        raise ConfigError(
            f"study file {str(path)!r} must define make_trainer(**options) returning a "
            "configured hpo_trainer.Trainer"
        )
    try:
        inspect.signature(make).bind(**options)
    except TypeError as exc:
        raise ConfigError(
            f"make_trainer() in {str(path)!r} does not accept the options it is given "
            f"({', '.join(options) or 'none'}): {exc}; define it as "
            "make_trainer(**options) and pass the options on to Trainer(...)"
        ) from None
    except ValueError:
        pass  # no signature to inspect (a builtin): let the call itself tell
    try:
        trainer = make(**options)
    except HpoTrainerError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"make_trainer() in {str(path)!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(trainer, Trainer):
        raise ConfigError(
            f"make_trainer() in {str(path)!r} must return a Trainer, got {type(trainer).__name__}"
        )
    trainer.factory = functools.partial(
        load_trainer_from_file, str(Path(path).resolve()), **options
    )
    return trainer


def defaults(path: str | Path, section: str) -> dict[str, Any]:
    """Return the study file's ``SEARCH`` or ``TRAIN`` defaults (empty if it has none)."""
    value = getattr(load_module(path), section, None) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{section} in study file {str(path)!r} must be a dict")
    return dict(value)


def file_hash(path: str | Path) -> str:
    """Return the SHA-256 of a study file, to tell later whether it changed."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
