"""hpo-trainer: Optuna-backed hyperparameter search and training for PyTorch models.

The public names below are imported on first use, so ``import hpo_trainer`` is cheap and
importing the training layer (:mod:`hpo_trainer.train`) never pulls in Optuna.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from hpo_trainer._version import __version__
from hpo_trainer.base.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    HpoTrainerError,
    NonFiniteError,
    NonFiniteLossError,
    SpaceError,
    StorageError,
)

if TYPE_CHECKING:
    from hpo_trainer.apps.final import final_run
    from hpo_trainer.apps.predict import LoadedRun, load_run
    from hpo_trainer.facade.trainer import Trainer
    from hpo_trainer.search.pruning import PruningCallback
    from hpo_trainer.space import CLASS, EPOCHS, Hyperparameters
    from hpo_trainer.train.best import KeepBest
    from hpo_trainer.train.callback import Callback
    from hpo_trainer.train.callbacks import (
        CheckpointCallback,
        EarlyStopping,
        ProgressCallback,
        TensorBoardCallback,
    )
    from hpo_trainer.train.devices import resolve_device
    from hpo_trainer.train.loop import fit
    from hpo_trainer.train.preprocess import Standardize, WithPreprocess
    from hpo_trainer.train.state import FitState, History

# We use Optuna's heartbeat, retry and metric-name features on purpose; their "experimental"
# warnings, attributed to our modules, say nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*(is|are) experimental", module=r"hpo_trainer")

#: Where each lazily imported public name lives.
_LAZY = {
    "CLASS": "hpo_trainer.space",
    "EPOCHS": "hpo_trainer.space",
    "Hyperparameters": "hpo_trainer.space",
    "Callback": "hpo_trainer.train.callback",
    "CheckpointCallback": "hpo_trainer.train.callbacks",
    "EarlyStopping": "hpo_trainer.train.callbacks",
    "ProgressCallback": "hpo_trainer.train.callbacks",
    "TensorBoardCallback": "hpo_trainer.train.callbacks",
    "PruningCallback": "hpo_trainer.search.pruning",
    "resolve_device": "hpo_trainer.train.devices",
    "fit": "hpo_trainer.train.loop",
    "FitState": "hpo_trainer.train.state",
    "History": "hpo_trainer.train.state",
    "Trainer": "hpo_trainer.facade.trainer",
    "LoadedRun": "hpo_trainer.apps.predict",
    "final_run": "hpo_trainer.apps.final",
    "KeepBest": "hpo_trainer.train.best",
    "Standardize": "hpo_trainer.train.preprocess",
    "WithPreprocess": "hpo_trainer.train.preprocess",
    "load_run": "hpo_trainer.apps.predict",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hpo_trainer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CLASS",
    "Callback",
    "CheckpointCallback",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EPOCHS",
    "EarlyStopping",
    "FitState",
    "History",
    "HpoTrainerError",
    "KeepBest",
    "Hyperparameters",
    "LoadedRun",
    "NonFiniteError",
    "NonFiniteLossError",
    "ProgressCallback",
    "PruningCallback",
    "SpaceError",
    "Standardize",
    "StorageError",
    "TensorBoardCallback",
    "Trainer",
    "WithPreprocess",
    "__version__",
    "final_run",
    "fit",
    "load_run",
    "resolve_device",
]
