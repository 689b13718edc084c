"""hpo-trainer: Optuna-backed hyperparameter search and training for PyTorch models."""

from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, version

from hpo_trainer.callbacks import (
    Callback,
    CheckpointCallback,
    EarlyStopping,
    ProgressCallback,
    PruningCallback,
    TensorBoardCallback,
)
from hpo_trainer.devices import resolve_device
from hpo_trainer.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    HpoTrainerError,
    NonFiniteLossError,
    SpaceError,
    StorageError,
)
from hpo_trainer.loop import FitState, History, fit
from hpo_trainer.space import CLASS, Hyperparameters
from hpo_trainer.trainer import Trainer

# We use Optuna's heartbeat, retry and metric-name features on purpose; their "experimental"
# warnings, attributed to our modules, say nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*(is|are) experimental", module=r"hpo_trainer")

try:
    __version__ = version("hpo-trainer")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "CLASS",
    "Callback",
    "CheckpointCallback",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EarlyStopping",
    "FitState",
    "History",
    "HpoTrainerError",
    "Hyperparameters",
    "NonFiniteLossError",
    "ProgressCallback",
    "PruningCallback",
    "SpaceError",
    "StorageError",
    "TensorBoardCallback",
    "Trainer",
    "__version__",
    "fit",
    "resolve_device",
]
