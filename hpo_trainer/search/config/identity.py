"""A search's study identity: the study's name, the storage that keeps it, its provenance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpo_trainer.base.errors import HpoTrainerError
from hpo_trainer.search.locks import budget_lock_problem


@dataclass(frozen=True)
class StudyIdentity:
    """Which study a search runs, and where it is kept.

    Attributes:
        study_name: The study's name; it also names the study's folder in ``runs_dir``.
        storage: The storage URL every worker opens.
        provenance: Facts recorded on the study as ``hpo:<key>`` (``study_file``,
            ``study_file_sha256``).

    """

    study_name: str
    storage: str
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_options(
        cls, *, study_name: Any, storage: Any, provenance: Any
    ) -> tuple[StudyIdentity, list[str]]:
        """Return the identity of these options, and every problem with them.

        Args:
            study_name: The study's name.
            storage: The storage URL.
            provenance: Facts to record on the study, or ``None`` for none.

        Returns:
            The identity, and one sentence per problem (empty if it is sound).

        """
        if isinstance(provenance, Mapping) or provenance is None:
            provenance = dict(provenance or {})
        identity = cls(study_name=study_name, storage=storage, provenance=provenance)
        return identity, identity.problems()

    def problems(self) -> list[str]:
        """Say what is wrong with the name, the storage and the provenance (empty if nothing)."""
        problems = name_problems(self.study_name)
        try:
            # A storage without a budget lock could start more trials than the budget.
            if (problem := budget_lock_problem(self.storage)) is not None:
                problems.append(problem)
        except HpoTrainerError as exc:
            problems.append(str(exc))
        if not isinstance(self.provenance, Mapping):
            problems.append(
                f"provenance must be a dict of facts to record on the study (e.g. "
                f"{{'study_file': 'studies/x.py'}}), got {self.provenance!r}"
            )
        return problems


def name_problems(name: Any) -> list[str]:
    """Say why ``name`` cannot name a study: it names its folder inside ``runs_dir``."""
    if not isinstance(name, str) or not name.strip():
        return [f"study_name must be a non-empty string, got {name!r}"]
    if any(c in name for c in "/\\\0:") or name.strip(".") == "" or name != name.strip():
        return [
            f"study_name names the study's folder inside runs_dir, so it must not contain "
            f"'/', '\\' or ':', be '.' or '..', or start or end with a space; got {name!r}. "
            f"Use letters, digits, '-', '_' and '.', e.g. {_safe_name(name)!r}"
        ]
    return []


def _safe_name(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return safe or "study"
