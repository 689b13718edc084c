"""Search spaces: :class:`Hyperparameters` and the dimensions it is made of.

A space knows Optuna's ``suggest_*`` calls and nothing of PyTorch. :data:`EPOCHS` stands for
the epoch count of the run being built, wherever a fixed value goes.
"""

from hpo_trainer.space.epochs import EPOCHS, EpochsExpr
from hpo_trainer.space.hyperparameters import CLASS, TARGETS, Hyperparameters

__all__ = ["CLASS", "EPOCHS", "TARGETS", "EpochsExpr", "Hyperparameters"]
