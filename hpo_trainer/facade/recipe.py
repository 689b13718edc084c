"""``Recipe``: what a user configures to build each run, through the template's setters.

The classes of the model, criterion, optimizer and scheduler, their primed arguments, the
search spaces, extra metrics and the input preprocessing. Each setter validates its input
where it enters (:mod:`hpo_trainer.facade.checks`); :meth:`Recipe.check` validates them
together. Nothing here is built: :func:`hpo_trainer.facade.build.build_run` builds a run
from a recipe's parts, and :class:`~hpo_trainer.Trainer` (a recipe) keeps what it built
apart from this, in its :class:`~hpo_trainer.facade.state.TrainerState`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from hpo_trainer.base.errors import ConfigError, did_you_mean, raise_all
from hpo_trainer.facade import checks
from hpo_trainer.space import TARGETS, Hyperparameters
from hpo_trainer.train import data
from hpo_trainer.train.loop import MetricFn
from hpo_trainer.train.preprocess import WithPreprocess, fitted


class Recipe:
    """The template's setters: classes, primed arguments, search spaces, metrics and the
    input preprocessing.
    """

    #: The training set the preprocessing is fitted on (set by the Trainer).
    train_data: Any

    def __init__(self) -> None:
        self._classes: dict[str, Any] = dict.fromkeys(TARGETS)
        self._primed: dict[str, tuple[tuple, dict]] = {t: ((), {}) for t in TARGETS}
        self._spaces: dict[str, Hyperparameters] = {}
        self._metric_fns: dict[str, MetricFn] = {}
        self._preprocess: nn.Module | None = None

    def set_model(self, model_class: type[nn.Module] | None) -> None:
        """Set the model class, built fresh for every run.

        Raises:
            ConfigError: If ``model_class`` is not a class (or a function building a model).

        """
        self._classes["model"] = checks.check_class("model", model_class)

    def set_criterion(self, criterion: Any) -> None:
        """Set the loss: a class such as ``nn.CrossEntropyLoss``, an instance, or a function.

        Raises:
            ConfigError: If ``criterion`` is not callable.

        """
        self._classes["criterion"] = checks.check_class("criterion", criterion)

    def set_optimizer(self, optimizer_class: type[torch.optim.Optimizer] | None) -> None:
        """Set the optimizer class (it may instead be searched with ``choose_class``).

        Raises:
            ConfigError: If ``optimizer_class`` is not a class (e.g. a name or an instance).

        """
        self._classes["optimizer"] = checks.check_class("optimizer", optimizer_class)

    def set_scheduler(self, scheduler_class: Any) -> None:
        """Set the learning-rate scheduler class (stepped once per epoch).

        Raises:
            ConfigError: If ``scheduler_class`` is not a class (e.g. a name or an instance).

        """
        self._classes["scheduler"] = checks.check_class("scheduler", scheduler_class)

    def prime_model(self, *args: Any, **kwargs: Any) -> None:
        """Fix arguments passed to the model class in every run."""
        self._primed["model"] = (args, kwargs)

    def prime_optimizer(self, *args: Any, **kwargs: Any) -> None:
        """Fix arguments passed to the optimizer after the model's parameters."""
        self._primed["optimizer"] = (args, kwargs)

    def prime_scheduler(self, *args: Any, **kwargs: Any) -> None:
        """Fix arguments passed to the scheduler after the optimizer, e.g. ``(5, gamma=0.1)``."""
        self._primed["scheduler"] = (args, kwargs)

    def prime_criterion(self, *args: Any, **kwargs: Any) -> None:
        """Fix arguments passed to the criterion class."""
        self._primed["criterion"] = (args, kwargs)

    def set_hyperparameters(self, hyp: Hyperparameters) -> None:
        """Set the search space of the optimizer."""
        self.set_space("optimizer", hyp)

    def set_arch_hyperparameters(self, hyp: Hyperparameters) -> None:
        """Set the search space of the model (its constructor's keyword arguments)."""
        self.set_space("model", hyp)

    def set_scheduler_hyperparameters(self, hyp: Hyperparameters) -> None:
        """Set the search space of the scheduler."""
        self.set_space("scheduler", hyp)

    def set_loader_hyperparameters(self, hyp: Hyperparameters) -> None:
        """Set the search space of the data loader (``batch_size``)."""
        self.set_space("loader", hyp)

    def set_space(self, target: str, hyp: Hyperparameters) -> None:
        """Set the search space of ``target`` (model, optimizer, scheduler, loader, criterion).

        Raises:
            ConfigError: If ``target`` or ``hyp`` is not valid.

        """
        if target not in TARGETS:
            raise ConfigError(
                f"target must be one of {', '.join(TARGETS)}, got {target!r}."
                + did_you_mean(str(target), TARGETS)
            )
        if not isinstance(hyp, Hyperparameters):
            raise ConfigError(f"expected a Hyperparameters object, got {type(hyp).__name__}")
        hyp.target = target
        self._spaces[target] = hyp

    def add_metric(self, name: str, fn: MetricFn) -> None:
        """Track ``fn(preds, target)``, averaged over examples, as ``val/<name>``.

        Raises:
            ConfigError: If ``name`` is not a non-empty string or ``fn`` is not callable.

        """
        if not isinstance(name, str) or not name.strip() or "/" in name:
            raise ConfigError(
                f"a metric name must be a non-empty string without '/' (it is logged as "
                f"val/<name>), got {name!r}"
            )
        if not callable(fn):
            raise ConfigError(
                f"metric {name!r} must be a callable fn(preds, target) returning a number, "
                f"got {type(fn).__name__} {fn!r}"
            )
        self._metric_fns[name] = fn

    def set_preprocess(self, preprocess: nn.Module | None) -> None:
        """Declare the preprocessing of the model's inputs, e.g. ``Standardize()``.

        It is fitted on the training inputs now (when it has a ``fit`` method), and every
        run's model applies it first (``WithPreprocess(preprocess, model)``): its statistics
        are saved with the weights, so ``predict`` and ``load_run`` apply them to new inputs.
        Give the datasets unpreprocessed.

        Args:
            preprocess: An ``nn.Module`` taking a batch of inputs; ``None`` removes it.

        Raises:
            ConfigError: If ``preprocess`` is not an ``nn.Module`` or cannot be fitted.

        """
        self._preprocess = fitted(preprocess, data.input_batches(self.train_data))

    @property
    def preprocess(self) -> nn.Module | None:
        """The declared input preprocessing (see :meth:`set_preprocess`), if any."""
        return self._preprocess

    def _shipped(self, model: nn.Module) -> nn.Module:
        """Return ``model`` with the declared preprocessing in front of it, on its device."""
        if self._preprocess is None:
            return model
        device = next(iter(model.parameters()), torch.empty(0)).device
        return WithPreprocess(copy.deepcopy(self._preprocess).to(device), model)

    @property
    def spaces(self) -> dict[str, Hyperparameters]:
        """The search spaces, by target."""
        return dict(self._spaces)

    def check(self) -> None:
        """Check the whole configuration before any training starts.

        Raises:
            ConfigError: Listing every problem found.

        """
        raise_all(checks.config_problems(self._classes, self._primed, self._spaces))

    @property
    def classes(self) -> dict[str, Any]:
        """The class (or factory) set for each target; ``None`` where unset."""
        return dict(self._classes)

    @property
    def primed(self) -> dict[str, tuple[tuple, dict]]:
        """The primed ``(args, kwargs)`` of each target."""
        return dict(self._primed)

    @property
    def metric_fns(self) -> dict[str, MetricFn]:
        """The extra evaluation metrics, by name."""
        return dict(self._metric_fns)

    @property
    def builds_scheduler(self) -> bool:
        """Whether a run has a scheduler: one is set, or the scheduler has a search space."""
        return self._classes["scheduler"] is not None or "scheduler" in self._spaces
