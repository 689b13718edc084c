"""Samplers and pruners by name: how a search picks parameters and stops bad trials early.

The defaults, ``tpe`` (multivariate, grouped, constant liar) with ``median-warm`` (the
median pruner, 5 start-up trials, judging a trial from epoch ``epochs // 5`` on), were chosen
with ``benchmarks/bench_quality.py``: five task families (a tabular MLP, a CNN read through
``ImageFolder``, a wide-range regression, a noisy imbalanced classifier, an lr x batch-size
interaction), 40 trials x 20 epochs, 2 workers, 5 seeds each, against a hand-written Optuna
script (TPE, ``MedianPruner(5, 3)``) and random search with successive halving (ASHA). Median
best validation loss relative to the script (2026-12-01, README "Search quality"):

====================  =======  =====  ==========  =====  ========  ==========
variant               tabular  cnn    regression  noisy  lr_batch  epochs
====================  =======  =====  ==========  =====  ========  ==========
median (old default)  1.114    1.179  1.001       0.988  1.039     0.58-0.85x
median-warm           0.921    1.117  0.991       0.978  1.009     1.04-1.28x
halving-warm          1.025    1.181  0.990       0.981  0.999     0.70-1.07x
gp + median-warm      1.159    1.287  1.005       0.988  1.171
random + ASHA         1.234    1.760  1.031       1.023  1.132     0.22-0.37x
====================  =======  =====  ==========  =====  ========  ==========

The old default (median from the first epoch once 3 trials finished) cut slow starters that
end best (CNN, tabular). ``median-warm`` finds the best loss on three families and is within
1% on a fourth, at the cost of training as many epochs as the script; ``halving-warm`` trains
fewer epochs but loses on tabular and CNN; the GP sampler, its conditional parameter sampled
independently, is behind everywhere. No choice met every target of the benchmark; see the
README for where and why.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna

from hpo_trainer.base.errors import ConfigError, did_you_mean
from hpo_trainer.space import Hyperparameters
from hpo_trainer.space.dimensions import CategoricalDim, FloatDim, IntDim

#: The default sampler and pruner, chosen with ``benchmarks/bench_quality.py`` (see the
#: module docs for the evidence).
DEFAULT_SAMPLER = "tpe"
DEFAULT_PRUNER = "median-warm"
SAMPLERS = ("tpe", "tpe-independent", "gp", "auto", "random", "cmaes", "qmc", "grid")
#: ``auto`` uses the GP sampler up to this many trials when no parameter is conditional.
AUTO_GP_MAX_TRIALS = 100
PRUNERS = (
    "median",
    "median-warm",
    "percentile",
    "halving",
    "halving-warm",
    "hyperband",
    "patient",
    "none",
)


def check_sampler(sampler: Any) -> None:
    """Raise a :class:`ConfigError` if ``sampler`` is neither a known name nor a sampler."""
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return
    if sampler not in SAMPLERS:
        raise ConfigError(
            f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)} or pass an "
            "optuna.samplers object." + did_you_mean(str(sampler), SAMPLERS)
        )


def check_pruner(pruner: Any) -> None:
    """Raise a :class:`ConfigError` if ``pruner`` is neither a known name nor a pruner."""
    if pruner is None or isinstance(pruner, optuna.pruners.BasePruner):
        return
    if pruner not in PRUNERS:
        raise ConfigError(
            f"unknown pruner {pruner!r}; choose one of {', '.join(PRUNERS)} or pass an "
            "optuna.pruners object." + did_you_mean(str(pruner), PRUNERS)
        )


def grid_space(spaces: Mapping[str, Hyperparameters]) -> dict[str, list[Any]]:
    """Return the grid of every searched parameter, by Optuna name.

    Raises:
        ConfigError: If a parameter is a continuous float or depends on a condition.

    """
    grid: dict[str, list[Any]] = {}
    for target, hyp in spaces.items():
        for name, dim in hyp.searched.items():
            key = f"{target}.{name}"
            if hyp.conditions(name):
                raise ConfigError(f"the grid sampler cannot search conditional {key!r}")
            if isinstance(dim, CategoricalDim):
                grid[key] = list(dim.labels)
            elif isinstance(dim, IntDim) and not dim.log:
                grid[key] = list(range(dim.low, dim.high + 1, dim.step))
            elif isinstance(dim, FloatDim) and dim.step is not None:
                n = int(np.floor((dim.high - dim.low) / dim.step + 1e-9))
                grid[key] = [dim.low + i * dim.step for i in range(n + 1)]
            else:
                raise ConfigError(
                    f"the grid sampler needs categorical, integer or stepped parameters, but "
                    f"{key!r} is {dim}; give it a step or use another sampler (tpe, qmc)"
                )
    return grid


def _has_conditions(spaces: Mapping[str, Hyperparameters]) -> bool:
    return any(hyp.conditions(name) for hyp in spaces.values() for name in hyp.searched)


def make_sampler(
    sampler: Any,
    *,
    seed: int | None,
    spaces: Mapping[str, Hyperparameters],
    n_trials: int | None = None,
) -> optuna.samplers.BaseSampler:
    """Build a sampler from its name (or return a sampler object as it is).

    TPE is multivariate and grouped (so conditional parameters work) and uses the constant
    liar, so that parallel workers do not draw near-duplicates of each other's running
    trials.
    """
    check_sampler(sampler)
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return sampler
    if sampler == "auto":
        small = n_trials is not None and n_trials <= AUTO_GP_MAX_TRIALS
        sampler = "gp" if small and not _has_conditions(spaces) else "tpe"
    if sampler == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True
            )
    if sampler == "tpe-independent":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.GridSampler(grid_space(spaces), seed=seed)


def make_pruner(pruner: Any, *, epochs: int) -> optuna.pruners.BasePruner:
    """Build a pruner from its name (or return a pruner object as it is).

    ``median`` and ``percentile`` (25th) judge a trial from its first epoch on, once 3
    trials have completed: on the digits search this trains about 39% of the epochs of an
    unpruned search and finds the same best loss (``benchmarks/bench_search.py``).
    ``halving`` and ``hyperband`` use the epoch budget as their resource; ``patient``
    wraps the median pruner and only prunes a trial that has not improved for 2 epochs.
    """
    check_pruner(pruner)
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner in (None, "none"):
        return optuna.pruners.NopPruner()
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3)
    if pruner == "median-warm":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, epochs // 5))
    if pruner == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=3)
    if pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if pruner == "halving-warm":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, epochs // 5), reduction_factor=3
        )
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.PatientPruner(
        optuna.pruners.MedianPruner(n_startup_trials=3), patience=2
    )
