"""Search spaces: :class:`Hyperparameters` and the dimensions it is made of.

A space knows Optuna's ``suggest_*`` calls and nothing of PyTorch.
"""

from hpo_trainer.space.hyperparameters import CLASS, TARGETS, Hyperparameters

__all__ = ["CLASS", "TARGETS", "Hyperparameters"]
