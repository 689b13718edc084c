"""The search configuration: frozen, picklable groups of options, each checking itself.

:func:`make_config` takes the options as a user gives them (``search(...)``,
``Trainer.hyp_opt(...)``, a study file's ``SEARCH``, the command line) and returns one
:class:`SearchConfig`, sent to every worker. It holds one small group per concern:

==================  ==============================================================  ==========
``cfg.identity``    ``study_name``, ``storage``, ``provenance``                     identity
``cfg.budget``      ``epochs``, ``n_trials``, ``timeout``, ``trial_timeout``,       budget
                    ``max_failures``
``cfg.goal``        ``metric``, ``direction``, ``objectives``, ``prune_on``         goal
``cfg.strategy``    ``sampler``, ``pruner``, ``seed``                               strategy
``cfg.placement``   ``n_workers``, ``slots`` (from ``devices`` and                  placement
                    ``workers_per_device``)
``cfg.durability``  ``runs_dir``, ``keep_checkpoints``, ``heartbeat_interval``,     durability
                    ``grace_period``
``cfg.warm_start``  ``enqueue``, ``warm_start_from``, ``warm_start_storage``,       warm
                    ``warm_start_top``
==================  ==============================================================  ==========

Each field has the name of the option that sets it. Each group, in the module named in the
last column, has ``problems()`` (what is wrong with its own values) and, where options need
defaults or another form, ``from_options(...)`` (the group and all its problems); only what
joins two groups is checked in :func:`make_config`.
"""

from hpo_trainer.search.config.budget import Budget
from hpo_trainer.search.config.durability import Durability
from hpo_trainer.search.config.goal import Goal
from hpo_trainer.search.config.identity import StudyIdentity
from hpo_trainer.search.config.make import ALIASES, SearchConfig, canonical_options, make_config
from hpo_trainer.search.config.placement import Placement
from hpo_trainer.search.config.strategy import Strategy
from hpo_trainer.search.config.warm import WarmStart

__all__ = [
    "ALIASES",
    "Budget",
    "Durability",
    "Goal",
    "Placement",
    "SearchConfig",
    "Strategy",
    "StudyIdentity",
    "WarmStart",
    "canonical_options",
    "make_config",
]
