"""Live progress of a search, read from the study storage (so it sees every worker)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo_trainer.search import facts


@dataclass(frozen=True)
class Progress:
    """A snapshot of a search.

    Attributes:
        done: Finished (complete or pruned) trials.
        total: The budget.
        complete: Completed trials.
        pruned: Pruned trials.
        failed: Trials that failed by themselves (:func:`facts.failures`: not those
            stopped by a signal or whose worker died, which are queued again).
        best: ``(trial number, value)`` of the best trial, if any.
        running: ``(worker, trial number, epoch)`` of each running trial (``worker`` is
            ``None`` until the trial has recorded it).

    """

    done: int
    total: int
    complete: int
    pruned: int
    failed: int
    best: tuple[int, float] | None
    running: tuple[tuple[Any, int, int], ...] = field(default_factory=tuple)

    def line(self) -> str:
        """Render the snapshot as one line."""
        text = (
            f"{self.done}/{self.total} trials finished ({self.complete} complete, "
            f"{self.pruned} pruned, {self.failed} failed)"
        )
        if self.best is not None:
            text += f" | best {self.best[1]:.5g} (trial {self.best[0]})"
        if self.running:
            text += " | " + ", ".join(
                ("" if w is None else f"w{w}: ") + f"trial {n} epoch {e}"
                for w, n, e in sorted(self.running, key=str)
            )
        return text


def snapshot(study: optuna.Study, total: int) -> Progress:
    """Read a :class:`Progress` from the study's storage."""
    trials = study.get_trials(deepcopy=False)
    top = facts.best(study, trials)
    counts = facts.outcomes(trials)  # the same counts as status: FAIL is facts.failures
    return Progress(
        done=facts.finished(trials),
        total=total,
        complete=counts.get(TrialState.COMPLETE.name, 0),
        pruned=counts.get(TrialState.PRUNED.name, 0),
        failed=counts.get(TrialState.FAIL.name, 0),
        best=None if top is None else (top.number, float(top.values[0])),  # first objective
        running=tuple(
            (t.user_attrs.get("worker"), t.number, max(t.intermediate_values, default=0))
            for t in facts.running(trials)
        ),
    )


class Monitor:
    """Polls a study in a thread and calls ``show`` with each changed snapshot.

    Args:
        study: The study (its own storage connection; the monitor only reads).
        total: The budget.
        show: Called with each new snapshot.
        every: Seconds between polls.

    """

    def __init__(
        self, study: optuna.Study, total: int, show: Callable[[Progress], None], every: float = 1.0
    ) -> None:
        self.study, self.total, self.show, self.every = study, total, show, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="progress")
        self._last: Progress | None = None

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()  # the final state

    def _poll(self) -> None:
        try:
            current = snapshot(self.study, self.total)
        except Exception:  # a busy database: try again next time
            return
        if current != self._last:
            self._last = current
            self.show(current)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._poll()
