"""Where a search's workers run: how many, and the GPU each worker process sees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpo_trainer.base.errors import ConfigError, is_int
from hpo_trainer.train.devices import device_slots, parse_devices


@dataclass(frozen=True)
class Placement:
    """The workers of a search on this machine.

    Attributes:
        n_workers: Local workers: one runs in this process, more are spawned processes.
            The one name of the worker count: the command line and ``SEARCH`` dicts also
            take it as ``workers``.
        slots: The GPU each worker process sees (``CUDA_VISIBLE_DEVICES``), one entry per
            slot, or ``None`` to spread the workers over the visible GPUs.

    """

    n_workers: int = 1
    slots: tuple[str, ...] | None = None

    @property
    def in_process(self) -> bool:
        """Whether the one worker runs in this process (no spawned processes)."""
        return self.n_workers == 1 and self.slots is None

    @classmethod
    def from_options(
        cls, *, n_workers: Any, devices: Any, workers_per_device: Any
    ) -> tuple[Placement, list[str]]:
        """Return the placement of these options, and every problem with them.

        Args:
            n_workers: Local workers; ``None``: one per device slot, else 1.
            devices: GPU ids to spread worker processes over: ``[0, 1]``, ``["0", "1"]``
                or ``"0,1"`` (see :func:`hpo_trainer.train.devices.parse_devices`), or
                ``None``.
            workers_per_device: Workers sharing each device of ``devices``.

        Returns:
            The placement, and one sentence per problem (empty if it is sound).

        """
        problems = []
        if not is_int(workers_per_device, 1):
            problems.append(
                f"workers_per_device must be an integer >= 1 (workers sharing each GPU of "
                f"devices), got {workers_per_device!r}"
            )
        slots = None
        if devices is not None:
            try:
                ids = parse_devices(devices)
                if not problems:
                    slots = tuple(device_slots(ids, workers_per_device))
            except ConfigError as exc:
                problems.append(str(exc))
        if n_workers is None:
            n_workers = len(slots) if slots else 1
        placement = cls(n_workers=n_workers, slots=slots)
        return placement, [*problems, *placement.problems()]

    def problems(self) -> list[str]:
        """Say what is wrong with the worker count and the slots (empty if nothing)."""
        problems = []
        if not is_int(self.n_workers, 1):
            problems.append(
                f"n_workers must be an integer >= 1 (local workers; leave it out for one, or "
                f"one per device slot), got {self.n_workers!r}"
            )
        if self.slots is not None and (
            not isinstance(self.slots, tuple)
            or not self.slots
            or not all(isinstance(s, str) for s in self.slots)
        ):
            problems.append(
                f"slots must be a non-empty tuple of GPU ids as CUDA_VISIBLE_DEVICES names "
                f"them (e.g. ('0', '1')), or None; got {self.slots!r}"
            )
        return problems
