"""Copy studies between storages (e.g. a local SQLite file to a shared PostgreSQL)."""

from __future__ import annotations

import logging

import optuna

from hpo_trainer.base.errors import ConfigError, did_you_mean
from hpo_trainer.search import artifacts
from hpo_trainer.search.storage import mask_url, open_storage, same_storage

logger = logging.getLogger(__name__)


def migrate(
    source: str, target: str, *, study_name: str | None = None, overwrite: bool = False
) -> dict[str, int]:
    """Copy one study (or every study) with all trials, intermediate values and attributes.

    Args:
        source: The storage URL to copy from (left untouched).
        target: The storage URL to copy to.
        study_name: The study to copy; ``None`` copies every study of the source.
        overwrite: Replace studies of the same name in the target; without it an existing
            study is an error and nothing is copied.

    Returns:
        Trials copied, by study name.

    Raises:
        StorageError: If the source is a file that does not exist.
        ConfigError: If the source holds no study, the study does not exist in the source,
            exists in the target without ``overwrite``, or source and target are the same
            storage (checked before anything is deleted).

    """
    src = open_storage(source, must_exist=True)
    available = [s.study_name for s in optuna.get_all_study_summaries(src, False)]
    if not available:
        raise ConfigError(f"{mask_url(source)} holds no study; nothing to copy")
    if study_name is not None and study_name not in available:
        raise ConfigError(
            f"no study named {study_name!r} in {mask_url(source)}; it has: "
            f"{', '.join(available) or 'no studies'}." + did_you_mean(study_name, available)
        )
    names = [study_name] if study_name is not None else available
    dst = open_storage(target)
    existing = {s.study_name for s in optuna.get_all_study_summaries(dst, False)}
    clash = [n for n in names if n in existing]
    if clash and not overwrite:
        raise ConfigError(
            f"{', '.join(repr(n) for n in clash)} already exist(s) in {mask_url(target)}; "
            "nothing was copied. Pass --overwrite to replace, or copy under another name"
        )
    if clash and same_storage(source, target):
        # Replacing a study by itself would delete it first and then have nothing to copy.
        raise ConfigError(
            f"source and target are the same storage ({mask_url(source)} and "
            f"{mask_url(target)}); copying {', '.join(repr(n) for n in clash)} onto itself "
            "would delete it, so nothing was changed. Give a different target (--to)"
        )
    copied = {}
    for name in names:
        if name in existing:
            optuna.delete_study(study_name=name, storage=dst)
        optuna.copy_study(from_study_name=name, from_storage=src, to_storage=dst)
        copy = optuna.load_study(study_name=name, storage=dst)
        artifacts.renumber(optuna.load_study(study_name=name, storage=src), copy)
        copied[name] = len(copy.trials)
        logger.info("copied %s (%d trials)", name, copied[name])
    return copied
