"""Search spaces: :class:`Hyperparameters` and the dimensions it is made of.

A space knows Optuna's ``suggest_*`` calls and nothing of PyTorch. One definition serves
the template's plain random draw (:meth:`Hyperparameters.sample`) and an Optuna trial
(:meth:`Hyperparameters.suggest`), so a search and a hand-rolled random sweep agree.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpo_trainer.errors import SpaceError, did_you_mean, raise_all

if TYPE_CHECKING:
    import optuna

#: What a space can configure. ``loader`` takes ``batch_size``.
TARGETS = ("model", "optimizer", "scheduler", "loader", "criterion")

#: The reserved name of a categorical that chooses the target class itself.
CLASS = "class"

_PRIMITIVE = (str, int, float, bool, type(None))
#: The largest integer a float (as Optuna stores values) holds exactly.
_MAX_INT = 2**53
_UNSET: Any = object()


def _label(value: Any) -> str | int | float | bool | None:
    """Return the JSON- and Optuna-safe label of a categorical choice."""
    if isinstance(value, _PRIMITIVE):
        return value
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    return name if isinstance(name, str) else repr(value)


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
        _check_bounds(self.low, self.high, self.log, self.step)

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
        if isinstance(stored, bool) or not isinstance(stored, (int, float)):
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
        _check_bounds(self.low, self.high, self.log, None if self.log else self.step)

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
        labels = tuple(_label(c) for c in self.choices)
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
        return _label(value)

    def __str__(self) -> str:
        return f"one of {list(self.labels)!r}"


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _is_finite(value: int | float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int beyond float range
        return False


def _check_bounds(low: float, high: float, log: bool, step: float | None) -> None:
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


@dataclass
class _Entry:
    """A registered name: its search definition, its fixed value, and which is in use."""

    dim: Dimension | None = None
    value: Any = _UNSET
    active: bool = False
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)


class Hyperparameters:
    """The tunable arguments of one target (optimizer by default), searched or fixed.

    The template's methods keep their meaning: :meth:`register` names arguments,
    :meth:`set_range` searches ``10 ** uniform(low, high)``, :meth:`set_value` fixes a value
    (and stops searching it), :meth:`activate` / :meth:`deactivate` switch between the two.
    Typed dimensions add linear and log floats and ints, steps, categoricals (which may hold
    classes, to search the optimizer itself) and conditions.

    Example:
        >>> hyp = Hyperparameters()
        >>> hyp.register(["lr", "momentum"])
        >>> hyp.set_range("lr", -5, -1)
        >>> hyp.set_value("momentum", 0.9)
        >>> sorted(hyp.sample(seed=0))
        ['lr', 'momentum']

    Args:
        target: What the names are arguments of: one of ``model``, ``optimizer``,
            ``scheduler``, ``loader``, ``criterion``.

    """

    def __init__(self, target: str = "optimizer") -> None:
        if target not in TARGETS:
            raise SpaceError(
                f"target must be one of {', '.join(TARGETS)}, got {target!r}."
                + did_you_mean(str(target), TARGETS)
            )
        self.target = target
        self._entries: dict[str, _Entry] = {}

    # -- the template's API ------------------------------------------------------------

    def register(self, names: str | Iterable[str]) -> Hyperparameters:
        """Declare one or more tunable names (keyword arguments of the target).

        Args:
            names: A name or a list of names.

        Returns:
            ``self``, for chaining.

        Raises:
            SpaceError: If ``names`` is neither a name nor a list of names.

        """
        if isinstance(names, str):
            names = [names]
        elif isinstance(names, Iterable) and not isinstance(names, (bytes, Mapping)):
            names = list(names)
        else:
            raise SpaceError(
                f"register takes a name or a list of names (keyword arguments of the "
                f"{self.target}), got {names!r}; e.g. register(['lr', 'momentum'])"
            )
        for name in names:
            self._check_name(name)
        for name in names:
            self._entry(name, create=True)
        return self

    def set_range(self, name: str, low: float, high: float) -> Hyperparameters:
        """Search ``name`` as ``10 ** uniform(low, high)``: a log-uniform range in exponents.

        ``set_range('lr', -5, -1)`` searches learning rates from 1e-5 to 1e-1.

        Args:
            name: The argument name.
            low: The base-10 exponent of the smallest value.
            high: The base-10 exponent of the largest value.

        Returns:
            ``self``, for chaining.

        """
        _check_bounds(low, high, False, None)
        lowest, highest = sys.float_info.min_10_exp, sys.float_info.max_10_exp
        if not lowest <= low < high <= highest:
            raise SpaceError(
                f"set_range takes base-10 exponents: set_range({name!r}, {low!r}, {high!r}) "
                f"means 10**{low!r} .. 10**{high!r}, but an exponent must lie in "
                f"[{lowest}, {highest}] for a float to hold it; e.g. set_range({name!r}, -5, "
                "-1) searches 1e-5 .. 1e-1"
            )
        return self._set_dim(name, FloatDim(10.0**low, 10.0**high, log=True), None)

    def set_value(self, name: str, value: Any) -> Hyperparameters:
        """Fix ``name`` to ``value``; it is no longer searched (see :meth:`activate`).

        Returns:
            ``self``, for chaining.

        Raises:
            SpaceError: If ``name`` is not an identifier, or is ``"class"`` and ``value``
                is not a class.

        """
        if name == CLASS and value is not None and not callable(value):
            raise SpaceError(
                f"'class' fixes the {self.target} class itself, so its value must be a class "
                f"such as SGD, got {value!r}"
            )
        entry = self._entry(name, create=True)
        entry.value = value
        entry.active = False
        return self

    def activate(self, name: str) -> Hyperparameters:
        """Search ``name`` again over the range it was given.

        Raises:
            SpaceError: If ``name`` is unknown or was never given a range.

        """
        entry = self._entry(name)
        if entry.dim is None:
            raise SpaceError(
                f"{name!r} has no range to search; give it one first, e.g. "
                f"set_range({name!r}, -5, -1) or add_float({name!r}, 0.0, 1.0)"
            )
        entry.active = True
        return self

    def deactivate(self, name: str) -> Hyperparameters:
        """Stop searching ``name``: it takes its fixed value, or the target's default if none.

        Raises:
            SpaceError: If ``name`` is unknown.

        """
        self._entry(name).active = False
        return self

    # -- typed dimensions ----------------------------------------------------------------

    def add_float(
        self,
        name: str,
        low: float,
        high: float,
        *,
        log: bool = False,
        step: float | None = None,
        when: Mapping[str, Any] | None = None,
    ) -> Hyperparameters:
        """Search a real number in ``[low, high]``.

        Args:
            name: The argument name.
            low: Smallest value.
            high: Largest value.
            log: Draw log-uniformly (``low`` must be above 0).
            step: Draw only ``low + k * step``.
            when: Search this only when other parameters of this space have these values,
                e.g. ``{"class": SGD}``; a list of values means any of them.

        Returns:
            ``self``, for chaining.

        """
        return self._set_dim(name, FloatDim(low, high, log=log, step=step), when)

    def add_int(
        self,
        name: str,
        low: int,
        high: int,
        *,
        log: bool = False,
        step: int = 1,
        when: Mapping[str, Any] | None = None,
    ) -> Hyperparameters:
        """Search an integer in ``[low, high]`` (see :meth:`add_float` for the arguments).

        Returns:
            ``self``, for chaining.

        """
        return self._set_dim(name, IntDim(low, high, log=log, step=step), when)

    def add_categorical(
        self, name: str, choices: Sequence[Any], *, when: Mapping[str, Any] | None = None
    ) -> Hyperparameters:
        """Search one of ``choices``: numbers, strings, or objects such as classes.

        Args:
            name: The argument name, or :data:`CLASS` (``"class"``) to choose the target
                class itself, e.g. ``add_categorical("class", [SGD, Adam])``.
            choices: The values to choose from.
            when: A condition, as in :meth:`add_float`.

        Returns:
            ``self``, for chaining.

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
        choices = tuple(choices)
        if name == CLASS:
            odd = [c for c in choices if c is not None and not callable(c)]
            if odd:
                raise SpaceError(
                    f"'class' chooses the {self.target} class itself, so its choices must be "
                    f"classes such as SGD, got {odd[0]!r}"
                )
        return self._set_dim(name, CategoricalDim(choices), when)

    def choose_class(self, choices: Sequence[type]) -> Hyperparameters:
        """Search the target class itself, e.g. ``choose_class([SGD, Adam])``.

        Returns:
            ``self``, for chaining.

        """
        return self.add_categorical(CLASS, choices)

    # -- reading the space ---------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        return list(self._entries)

    @property
    def searched(self) -> dict[str, Dimension]:
        """The names being searched, with their dimensions."""
        return {n: e.dim for n, e in self._entries.items() if e.active and e.dim is not None}

    @property
    def fixed(self) -> dict[str, Any]:
        """The names with a fixed value, with those values."""
        return {
            n: e.value for n, e in self._entries.items() if not e.active and e.value is not _UNSET
        }

    def conditions(self, name: str) -> dict[str, tuple[Any, ...]]:
        """Return the condition of ``name``: parent name -> values under which it exists."""
        return dict(self._entry(name).when)

    def validate(self) -> None:
        """Check the space as a whole (conditions refer to searched categoricals, no cycles).

        Raises:
            SpaceError: Listing every problem found.

        """
        problems = []
        for name, entry in self._entries.items():
            if entry.dim is None and entry.value is _UNSET:
                problems.append(
                    f"{name!r} is registered but has neither a range nor a value; call "
                    f"set_range({name!r}, low, high) or set_value({name!r}, value), or do "
                    "not register it"
                )
            for parent, values in entry.when.items():
                pentry = self._entries.get(parent)
                if pentry is None:
                    problems.append(
                        f"{name!r} depends on {parent!r}, which is not in this space."
                        + did_you_mean(parent, self._entries)
                    )
                    continue
                if isinstance(pentry.dim, CategoricalDim) and pentry.active:
                    bad = [v for v in values if v not in pentry.dim.labels]
                    if bad:
                        problems.append(
                            f"{name!r} depends on {parent!r} being {bad[0]!r}, which is not "
                            f"one of its choices {list(pentry.dim.labels)!r}"
                        )
        if not problems:
            try:
                self._order()
            except SpaceError as exc:
                problems.append(str(exc))
        raise_all(problems, SpaceError)

    # -- drawing values ------------------------------------------------------------------

    def sample(self, rng: random.Random | None = None, *, seed: int | None = None) -> dict:
        """Draw one set of values at random, without Optuna (the template's draw).

        Args:
            rng: A random generator to draw from.
            seed: A seed for a fresh generator, if ``rng`` is not given.

        Returns:
            The values to pass to the target, searched and fixed, by argument name.

        """
        self.validate()
        rng = rng or random.Random(seed)
        return self._draw(lambda name, dim: dim.sample(rng))

    def suggest(self, trial: optuna.Trial, *, prefix: str | None = None) -> dict:
        """Ask an Optuna trial for every searched value; add the fixed ones.

        Args:
            trial: The trial.
            prefix: What Optuna names are prefixed with; by default ``"<target>."``.

        Returns:
            The values to pass to the target, by argument name.

        """
        self.validate()
        prefix = f"{self.target}." if prefix is None else prefix
        return self._draw(lambda name, dim: dim.suggest(trial, prefix + name))

    def decode(self, stored: Mapping[str, Any]) -> dict:
        """Rebuild values from stored ones (an Optuna trial's params or a params file).

        Args:
            stored: Searched names (without prefix) -> stored values (labels for objects).

        Returns:
            The values to pass to the target, searched and fixed, by argument name.

        Raises:
            SpaceError: Listing every stored value that does not fit the space, every
                searched name that is missing and every name the space does not know.

        """
        self.validate()
        problems: list[str] = []
        unknown = [k for k in stored if k not in self.searched]
        for key in unknown:
            problems.append(
                f"{self.target} parameter {key!r} is not searched in this space "
                f"(searched: {', '.join(self.searched) or 'none'})."
                + did_you_mean(key, self.searched)
            )

        def pick(name: str, dim: Dimension) -> Any:
            if name not in stored:
                problems.append(f"{self.target} parameter {name!r} is missing")
                return None
            try:
                return dim.decode(stored[name])
            except ValueError as exc:
                problems.append(f"{self.target} parameter {name!r} {exc}")
                return None

        values = self._draw(pick)
        for key in stored:
            if key in self.searched and key not in values:
                when = ", ".join(
                    f"{p} is {' or '.join(map(str, v))}"
                    for p, v in self._entries[key].when.items()
                )
                problems.append(
                    f"{self.target} parameter {key!r} only applies when {when}; remove it "
                    "or change that choice"
                )
        raise_all(problems, SpaceError)
        return values

    def encode(self, values: Mapping[str, Any]) -> dict:
        """Return the searched values of ``values`` as stored (labels for objects)."""
        searched = self.searched
        return {k: searched[k].encode(v) for k, v in values.items() if k in searched}

    # -- internals -----------------------------------------------------------------------

    def _check_name(self, name: Any) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise SpaceError(
                f"a hyperparameter name must be a Python identifier (a keyword argument "
                f"of the {self.target}), got {name!r}"
            )

    def _entry(self, name: str, *, create: bool = False) -> _Entry:
        self._check_name(name)
        if name not in self._entries:
            if not create:
                raise SpaceError(
                    f"{name!r} is not registered in this {self.target} space."
                    + did_you_mean(name, self._entries)
                    + f" Register it first: register({name!r})"
                )
            self._entries[name] = _Entry()
        return self._entries[name]

    def _set_dim(
        self, name: str, dim: Dimension, when: Mapping[str, Any] | None
    ) -> Hyperparameters:
        self._check_name(name)
        if name == CLASS and not isinstance(dim, CategoricalDim):
            raise SpaceError(
                f"'class' chooses the {self.target} class itself, so it must be a categorical "
                f"of classes, e.g. choose_class([SGD, Adam]); got a {dim} range"
            )
        if when is not None and not isinstance(when, Mapping):
            raise SpaceError(
                f"when must be a dict {{parent name: value or list of values}}, e.g. "
                f"when={{'class': SGD}}, got {when!r}"
            )
        conditions = {}
        for parent, values in (when or {}).items():
            if parent == name:
                raise SpaceError(f"{name!r} cannot depend on itself")
            many = values if isinstance(values, (list, set, frozenset)) else [values]
            conditions[parent] = tuple(_label(v) for v in many)
        entry = self._entry(name, create=True)
        entry.dim = dim
        entry.active = True
        entry.when = conditions
        return self

    def _order(self) -> list[str]:
        """Names in an order where every parent comes before the names depending on it."""
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(name: str, path: tuple[str, ...]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = " -> ".join((*path, name))
                raise SpaceError(f"conditions form a cycle: {cycle}; remove one of them")
            state[name] = 1
            for parent in self._entries[name].when:
                if parent in self._entries:
                    visit(parent, (*path, name))
            state[name] = 2
            order.append(name)

        for name in self._entries:
            visit(name, ())
        return order

    def _draw(self, draw: Any) -> dict:
        labels: dict[str, Any] = {}
        values: dict[str, Any] = {}
        for name in self._order():
            entry = self._entries[name]
            if not all(labels.get(p, _UNSET) in vs for p, vs in entry.when.items()):
                continue
            if entry.active and entry.dim is not None:
                values[name] = draw(name, entry.dim)
            elif entry.value is not _UNSET:
                values[name] = entry.value
            else:
                continue
            labels[name] = _label(values[name])
        return values

    def __repr__(self) -> str:
        parts = []
        for name, entry in self._entries.items():
            if entry.active and entry.dim is not None:
                parts.append(f"{name}: {entry.dim}")
            elif entry.value is not _UNSET:
                parts.append(f"{name} = {entry.value!r}")
            else:
                parts.append(f"{name}: default")
        return f"Hyperparameters({self.target}; {'; '.join(parts)})"
