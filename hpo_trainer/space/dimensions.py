"""The dimensions of a search space: how one parameter is drawn and asked of Optuna.

Each dimension draws a value at random without Optuna (:meth:`Dimension.sample`), asks an
Optuna trial for one (:meth:`Dimension.suggest`), and maps values to what Optuna and params
files store and back (:meth:`Dimension.encode`, :meth:`Dimension.decode`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpo_trainer.base.errors import SpaceError, is_real

if TYPE_CHECKING:
    import optuna


_PRIMITIVE = (str, int, float, bool, type(None))


#: The largest integer a float (as Optuna stores values) holds exactly.
_MAX_INT = 2**53


def choice_label(value: Any) -> str | int | float | bool | None:
    """Return the JSON- and Optuna-safe label of a categorical choice."""
    if isinstance(value, _PRIMITIVE):
        return value
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    return name if isinstance(name, str) else repr(value)


def choice_tuple(name: str, choices: Any) -> tuple[Any, ...]:
    """Return the choices of the categorical ``name`` as a tuple, in their given order.

    Raises:
        SpaceError: If ``choices`` is not a list or tuple (a string, or a set: its order
            changes from process to process).

    """
    if isinstance(choices, (str, bytes)) or not isinstance(choices, Iterable):
        raise SpaceError(
            f"choices for {name!r} must be a list, got {choices!r}; "
            f"write add_categorical({name!r}, [{choices!r}, ...])"
        )
    if isinstance(choices, (set, frozenset)):
        raise SpaceError(
            f"choices for {name!r} must come in a fixed order, a list or tuple, not a set: "
            "a set's order changes from process to process, so workers would disagree "
            f"on the choices; write add_categorical({name!r}, sorted(...)) or a list"
        )
    return tuple(choices)


class Dimension:
    """One searched parameter: how to draw it and how to ask Optuna for it."""

    def sample(self, rng: random.Random) -> Any:
        """Draw a value at random, without Optuna."""
        raise NotImplementedError

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        """Ask ``trial`` for a value under the name ``name``."""
        raise NotImplementedError

    def decode(self, stored: Any) -> Any:
        """Turn a value as stored by Optuna or in a params file into the value to use.

        Raises:
            ValueError: If ``stored`` is not a value of this dimension.

        """
        raise NotImplementedError

    def encode(self, value: Any) -> Any:
        """Turn a value into what Optuna and params files store (the inverse of decode)."""
        return value


@dataclass(frozen=True)
class FloatDim(Dimension):
    """A real number in ``[low, high]``, linear or log-uniform, optionally on a step grid."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def __post_init__(self) -> None:
        check_bounds(self.low, self.high, self.log, self.step)

    def sample(self, rng: random.Random) -> float:
        """Draw a value at random."""
        low, high = float(self.low), float(self.high)
        if self.step is not None:
            n = int(math.floor((high - low) / self.step + 1e-9))
            # low + n * step may round a hair above high (0.1 * 3 > 0.3): clip it.
            return min(high, low + self.step * rng.randint(0, n))
        if self.log:
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = rng.uniform(low, high)
        return min(high, max(low, value))

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        """Ask ``trial`` for a value."""
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)

    def decode(self, stored: Any) -> float:
        """Check and return a stored value."""
        if not is_real(stored):
            raise ValueError(f"must be a number, got {stored!r}")
        tol = 1e-9 * max(1.0, abs(self.high))
        if not self.low - tol <= stored <= self.high + tol:
            raise ValueError(f"must lie in [{self.low}, {self.high}], got {stored!r}")
        if self.step is not None:
            k = (stored - self.low) / self.step
            if abs(k - round(k)) > 1e-8 * max(1.0, (abs(self.low) + abs(self.high)) / self.step):
                nearest = min(float(self.high), self.low + round(k) * self.step)
                raise ValueError(
                    f"must lie on the grid {self.low} + k * {self.step} (step {self.step}), "
                    f"got {stored!r}; the nearest value is {nearest:.10g}"
                )
        return float(stored)

    def __str__(self) -> str:
        kind = "log-uniform" if self.log else "uniform"
        step = f", step {self.step}" if self.step is not None else ""
        return f"float {kind} [{self.low:g}, {self.high:g}]{step}"


@dataclass(frozen=True)
class IntDim(Dimension):
    """An integer in ``[low, high]``, linear or log-uniform, on a step grid."""

    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        for bound in (self.low, self.high, self.step):
            if isinstance(bound, bool) or not isinstance(bound, int):
                raise SpaceError(
                    f"an int range needs integer bounds and step, got {bound!r}; "
                    "use add_float for real numbers"
                )
        for bound in (self.low, self.high):
            if abs(bound) > _MAX_INT:
                raise SpaceError(
                    f"int range bounds must lie within -2**53 .. 2**53 (Optuna stores values "
                    f"as floats, which cannot tell larger integers apart), got {bound!r}"
                )
        if self.log and self.step != 1:
            raise SpaceError(f"a log int range must have step 1, got step={self.step}")
        check_bounds(self.low, self.high, self.log, None if self.log else self.step)

    def sample(self, rng: random.Random) -> int:
        """Draw a value at random."""
        if self.log:
            x = math.exp(rng.uniform(math.log(self.low - 0.5), math.log(self.high + 0.5)))
            return min(self.high, max(self.low, round(x)))
        return self.low + self.step * rng.randint(0, (self.high - self.low) // self.step)

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        """Ask ``trial`` for a value."""
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step)

    def decode(self, stored: Any) -> int:
        """Check and return a stored value."""
        if isinstance(stored, float) and stored.is_integer():
            stored = int(stored)
        if isinstance(stored, bool) or not isinstance(stored, int):
            raise ValueError(f"must be an integer, got {stored!r}")
        if not self.low <= stored <= self.high or (stored - self.low) % self.step:
            raise ValueError(
                f"must be an integer in [{self.low}, {self.high}] with step {self.step}, "
                f"got {stored!r}"
            )
        return stored

    def __str__(self) -> str:
        kind = "log-uniform" if self.log else "uniform"
        step = f", step {self.step}" if self.step != 1 else ""
        return f"int {kind} [{self.low}, {self.high}]{step}"


@dataclass(frozen=True)
class CategoricalDim(Dimension):
    """One of a list of choices: numbers, strings, or objects such as classes.

    Optuna stores only primitives, so objects are stored by a label (a class's qualified
    name, otherwise its ``repr``) and mapped back when suggested.
    """

    choices: tuple[Any, ...]
    labels: tuple[Any, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.choices:
            raise SpaceError(
                "a categorical needs at least one choice, got an empty list; "
                "give the choices, e.g. add_categorical('optimizer', [SGD, Adam])"
            )
        if any(isinstance(c, float) and math.isnan(c) for c in self.choices):
            raise SpaceError(
                f"a categorical choice cannot be NaN, got {list(self.choices)!r}: NaN equals "
                "nothing, not even itself, so a stored NaN could never be matched back; use "
                "None or a string such as 'nan'"
            )
        labels = tuple(choice_label(c) for c in self.choices)
        dupes = sorted({str(x) for x in labels if labels.count(x) > 1})
        if dupes:
            raise SpaceError(
                f"categorical choices must be distinct, but {', '.join(dupes)} appears "
                "more than once (objects are told apart by class name or repr)"
            )
        object.__setattr__(self, "labels", labels)

    def sample(self, rng: random.Random) -> Any:
        """Draw a choice at random."""
        return rng.choice(self.choices)

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        """Ask ``trial`` for a choice (by label) and return the choice itself."""
        return self.decode(trial.suggest_categorical(name, list(self.labels)))

    def decode(self, stored: Any) -> Any:
        """Map a stored label back to its choice."""
        for label, choice in zip(self.labels, self.choices):
            if label == stored and type(label) is type(stored):
                return choice
        for label, choice in zip(self.labels, self.choices):
            if label == stored:
                return choice
        raise ValueError(f"must be one of {list(self.labels)!r}, got {stored!r}")

    def encode(self, value: Any) -> Any:
        """Return the label of a choice."""
        return choice_label(value)

    def __str__(self) -> str:
        return f"one of {list(self.labels)!r}"


def _is_number(value: Any) -> bool:
    return is_real(value)


def _is_finite(value: int | float) -> bool:
    return is_real(value, finite=True)


def check_bounds(low: float, high: float, log: bool, step: float | None) -> None:
    """Check a range's bounds and step.

    Raises:
        SpaceError: Saying what must hold, with the bad value.

    """
    for bound in (low, high):
        if not _is_number(bound) or isinstance(bound, float) and math.isnan(bound):
            raise SpaceError(f"range bounds must be numbers, got {bound!r}")
    for bound in (low, high):
        if not _is_finite(bound):
            raise SpaceError(
                f"range bounds must be finite numbers, got {bound!r}; give the largest and "
                "smallest values you want searched"
            )
    if low >= high:
        raise SpaceError(
            f"a range needs low < high, got low={low!r}, high={high!r}; "
            "swap them, or use set_value for a single value"
        )
    width = float(high) - float(low)
    if not math.isfinite(width):
        raise SpaceError(
            f"the range [{low!r}, {high!r}] is wider than the largest float; narrow it, or "
            "search a log range"
        )
    if log and low <= 0:
        raise SpaceError(
            f"a log range must be above 0, got [{low!r}, {high!r}]; give a positive low "
            "(e.g. 1e-6), or use set_range(name, -6, -1) for 10**-6 .. 10**-1"
        )
    if step is not None:
        if not _is_number(step):
            raise SpaceError(f"a step must be a positive number or None, got step={step!r}")
        if not _is_finite(step):
            raise SpaceError(f"a step must be a finite positive number, got step={step!r}")
        if step <= 0:
            raise SpaceError(f"a step must be positive, got step={step!r}")
        if log:
            raise SpaceError("a float range cannot be both log and stepped; choose one")
        if step > width * (1 + 1e-9):
            raise SpaceError(
                f"a step of {step!r} is wider than the range [{low!r}, {high!r}], so only "
                f"{low!r} could ever be drawn; use a step of at most {width:g}, or set_value "
                "for a single value"
            )
        if width / step > _MAX_INT:
            raise SpaceError(
                f"a step of {step!r} cuts [{low!r}, {high!r}] into more than 2**53 points, "
                "more than floats can tell apart; use a larger step, or no step"
            )
