"""Search spaces: :class:`Hyperparameters`, made of dimensions (:mod:`.dimensions`).

A space knows Optuna's ``suggest_*`` calls and nothing of PyTorch. One definition serves a
plain random draw (:meth:`Hyperparameters.sample`) and an Optuna trial (:meth:`suggest`).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpo_trainer.base.errors import SpaceError, did_you_mean, raise_all
from hpo_trainer.space.conditions import parents_first, parse_when
from hpo_trainer.space.dimensions import (
    CategoricalDim,
    Dimension,
    FloatDim,
    IntDim,
    check_bounds,
    choice_label,
    choice_tuple,
)

if TYPE_CHECKING:
    import optuna

#: What a space can configure. ``loader`` takes ``batch_size``.
TARGETS = ("model", "optimizer", "scheduler", "loader", "criterion")

#: The reserved name of a categorical that chooses the target class itself.
CLASS = "class"

_UNSET: Any = object()


@dataclass
class _Entry:
    """A registered name: its search definition, its fixed value, and which is in use.

    The range and the fixed value each have their own condition (``when``, ``value_when``),
    so switching between them with activate / deactivate keeps each one's condition.
    """

    dim: Dimension | None = None
    value: Any = _UNSET
    active: bool = False
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    value_when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def condition(self) -> dict[str, tuple[Any, ...]]:
        """The condition of what is in use: the range if searched, else the fixed value."""
        return self.when if self.active and self.dim is not None else self.value_when


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
        check_bounds(low, high, False, None)
        lowest, highest = sys.float_info.min_10_exp, sys.float_info.max_10_exp
        if not lowest <= low < high <= highest:
            raise SpaceError(
                f"set_range takes base-10 exponents: set_range({name!r}, {low!r}, {high!r}) "
                f"means 10**{low!r} .. 10**{high!r}, but an exponent must lie in "
                f"[{lowest}, {highest}] for a float to hold it; e.g. set_range({name!r}, -5, "
                "-1) searches 1e-5 .. 1e-1"
            )
        return self._set_dim(name, FloatDim(10.0**low, 10.0**high, log=True), None)

    def set_value(
        self, name: str, value: Any, *, when: Mapping[str, Any] | None = None
    ) -> Hyperparameters:
        """Fix ``name`` to ``value``; it is no longer searched (see :meth:`activate`).

        Args:
            name: The argument name.
            value: The value, passed to the target as it is; :data:`~hpo_trainer.EPOCHS`
                (or ``EPOCHS // 2``, ...) becomes the epoch count of each run when built.
            when: Pass it only when other parameters of this space have these values, e.g.
                ``set_value("momentum", 0.9, when={"class": SGD})``, as in
                :meth:`add_float`. A range's condition does not carry over to the value.

        Returns:
            ``self``, for chaining.

        Raises:
            SpaceError: If ``name`` is not an identifier, is ``"class"`` and ``value`` is
                not a class, or ``when`` is not a valid condition.

        """
        if name == CLASS and value is not None and not callable(value):
            raise SpaceError(
                f"'class' fixes the {self.target} class itself, so its value must be a class "
                f"such as SGD, got {value!r}"
            )
        conditions = parse_when(name, when)
        entry = self._entry(name, create=True)
        entry.value = value
        entry.value_when = conditions
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
        choices = choice_tuple(name, choices)
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
        """The names with a fixed value, with those values (conditional ones too)."""
        return {
            n: e.value for n, e in self._entries.items() if not e.active and e.value is not _UNSET
        }

    def conditions(self, name: str) -> dict[str, tuple[Any, ...]]:
        """Return the condition of ``name``: parent name -> values under which it exists.

        It is the condition of the range while ``name`` is searched, else of its fixed value.
        """
        return dict(self._entry(name).condition)

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
            for parent, values in entry.condition.items():
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
                    for p, v in self._entries[key].condition.items()
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
        conditions = parse_when(name, when)
        entry = self._entry(name, create=True)
        entry.dim = dim
        entry.active = True
        entry.when = conditions
        return self

    def _order(self) -> list[str]:
        """Names in an order where every parent comes before the names depending on it."""
        return parents_first({name: entry.condition for name, entry in self._entries.items()})

    def _draw(self, draw: Any) -> dict:
        labels: dict[str, Any] = {}
        values: dict[str, Any] = {}
        for name in self._order():
            entry = self._entries[name]
            if not all(labels.get(p, _UNSET) in vs for p, vs in entry.condition.items()):
                continue
            if entry.active and entry.dim is not None:
                values[name] = draw(name, entry.dim)
            elif entry.value is not _UNSET:
                values[name] = entry.value
            else:
                continue
            labels[name] = choice_label(values[name])
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
