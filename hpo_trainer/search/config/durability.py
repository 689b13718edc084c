"""What keeps a search's work safe: trial folders, kept checkpoints, heartbeats of live trials."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo_trainer.base.errors import is_int
from hpo_trainer.search.heartbeat import GRACE_BEATS, INTERVAL


@dataclass(frozen=True)
class Durability:
    """Where a search keeps its trials' files, and how it tells a dead trial.

    Attributes:
        runs_dir: Where trial folders go: ``runs_dir/<study>/trial-<n>/``.
        keep_checkpoints: Checkpoints of this many best trials are kept; others are
            removed (0 keeps none).
        heartbeat_interval: Seconds between heartbeats of a running trial.
        grace_period: Seconds without a heartbeat before a trial counts as dead.

    """

    runs_dir: str = "runs"
    keep_checkpoints: int = 3
    heartbeat_interval: int = INTERVAL
    grace_period: int = INTERVAL * GRACE_BEATS

    @classmethod
    def from_options(
        cls,
        *,
        runs_dir: str | os.PathLike[str],
        keep_checkpoints: Any,
        heartbeat_interval: Any,
        grace_period: Any,
    ) -> tuple[Durability, list[str]]:
        """Return the durability of these options, and every problem with them.

        Args:
            runs_dir: Where trial folders go.
            keep_checkpoints: Checkpoints of this many best trials are kept.
            heartbeat_interval: Seconds between heartbeats of a running trial.
            grace_period: Seconds without a heartbeat before a trial counts as dead;
                ``None``: :data:`~hpo_trainer.search.heartbeat.GRACE_BEATS` heartbeats.

        Returns:
            The durability, and one sentence per problem (empty if it is sound).

        """
        if grace_period is None and is_int(heartbeat_interval, 1):
            grace_period = GRACE_BEATS * heartbeat_interval
        durability = cls(
            runs_dir=str(runs_dir),
            keep_checkpoints=keep_checkpoints,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )
        return durability, durability.problems()

    def problems(self) -> list[str]:
        """Say which values are out of range (empty if none)."""
        problems = []
        if not is_int(self.keep_checkpoints, 0):
            problems.append(
                f"keep_checkpoints must be an integer >= 0 (checkpoints of the best trials "
                f"to keep), got {self.keep_checkpoints!r}"
            )
        if not is_int(self.heartbeat_interval, 1):
            problems.append(
                f"heartbeat_interval must be a whole number of seconds >= 1, got "
                f"{self.heartbeat_interval!r}"
            )
        elif not is_int(self.grace_period, 1) or self.grace_period <= self.heartbeat_interval:
            problems.append(
                f"grace_period must be a whole number of seconds longer than "
                f"heartbeat_interval ({self.heartbeat_interval}), got {self.grace_period!r}"
            )
        return problems

    def folder_problems(self, study_name: str) -> list[str]:
        """Say why the trial folders of study ``study_name`` cannot be made (before any trial).

        Args:
            study_name: A valid study name: it names the study's folder in ``runs_dir``.

        """
        study_folder = Path(self.runs_dir) / study_name
        for folder in (study_folder, *study_folder.parents):
            if not folder.exists():
                continue
            if not folder.is_dir():
                return [
                    f"runs_dir {self.runs_dir!r} cannot hold trial folders: {str(folder)!r} "
                    "is a file, not a folder; give another --runs-dir or move the file"
                ]
            if not os.access(folder, os.W_OK | os.X_OK):
                return [
                    f"runs_dir {self.runs_dir!r} cannot hold trial folders: {str(folder)!r} "
                    "is not writable; give another --runs-dir"
                ]
            break
        return []
