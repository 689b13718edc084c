"""The run's epoch count as a value: :data:`EPOCHS`, resolved when a run is built.

An argument tied to the length of a run (``CosineAnnealingLR``'s ``T_max``) must follow
the run: a search's trials train a few epochs, the final run more. ``EPOCHS`` stands for
the epochs of the run being built, wherever a fixed value goes (``set_value``, the
``prime_*`` functions, categorical choices); ``EPOCHS // 2``, ``EPOCHS - 1`` or
``2 * EPOCHS`` build small expressions. :func:`resolve_epochs` turns them into numbers
when a run is built, so one study file is right for 20-epoch trials and a 60-epoch run.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpo_trainer.base.errors import ConfigError, SpaceError

#: Each step of an expression applies one of these to the value so far and its operand.
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "//": operator.floordiv,
    "rsub": lambda value, operand: operand - value,
}


@dataclass(frozen=True, repr=False)
class EpochsExpr:
    """The epoch count of the run being built, with arithmetic applied in order.

    Plain data (a tuple of steps), so it pickles and compares by value: a trainer sent to
    a worker process keeps its expressions.

    Attributes:
        steps: ``(op, operand)`` pairs applied in order to the epoch count; ``op`` is
            ``+``, ``-``, ``*``, ``//`` or ``rsub`` (``operand - value``).

    """

    steps: tuple[tuple[str, int | float], ...] = ()

    def _then(self, op: str, operand: Any) -> Any:
        if isinstance(operand, bool) or not isinstance(operand, numbers.Real):
            return NotImplemented  # Python then raises its "unsupported operand" TypeError
        # numpy scalars become plain numbers: they pickle small and read as written
        operand = int(operand) if isinstance(operand, numbers.Integral) else float(operand)
        if not math.isfinite(operand):
            raise SpaceError(
                f"arithmetic on {self!r} takes finite numbers, got {operand!r}; use a number "
                "such as 2"
            )
        if op == "//" and operand == 0:
            raise SpaceError(f"{self!r} // 0 divides by zero; divide by a number above 0")
        return EpochsExpr((*self.steps, (op, operand)))

    def __add__(self, other: Any) -> EpochsExpr:
        return self._then("+", other)

    __radd__ = __add__

    def __sub__(self, other: Any) -> EpochsExpr:
        return self._then("-", other)

    def __rsub__(self, other: Any) -> EpochsExpr:
        return self._then("rsub", other)

    def __mul__(self, other: Any) -> EpochsExpr:
        return self._then("*", other)

    __rmul__ = __mul__

    def __floordiv__(self, other: Any) -> EpochsExpr:
        return self._then("//", other)

    def __truediv__(self, other: Any) -> EpochsExpr:
        raise SpaceError(
            f"{self!r} / {other!r}: an epoch count is a whole number, so divide with //, "
            f"e.g. {self!r} // {other!r}"
        )

    def __repr__(self) -> str:
        text, additive = "EPOCHS", False
        for op, operand in self.steps:
            if op == "rsub":
                text = f"{operand!r} - {text if text == 'EPOCHS' else f'({text})'}"
            elif op in ("*", "//") and additive:
                text = f"({text}) {op} {operand!r}"
            else:
                text = f"{text} {op} {operand!r}"
            additive = op in ("+", "-", "rsub")
        return text

    def resolve(self, epochs: int | None, where: str) -> int:
        """Return this expression's value for a run of ``epochs`` epochs.

        Args:
            epochs: The epochs of the run being built.
            where: What the value is for, for errors (``"scheduler argument 'T_max'"``).

        Returns:
            The value: a positive integer.

        Raises:
            ConfigError: If ``epochs`` is not given, or the value is not a positive integer.

        """
        if epochs is None:
            raise ConfigError(
                f"{where} is {self!r}, which needs the epoch count of the run, but this build "
                "was given none; pass epochs=N (e.g. Trainer.build(values, epochs=N))"
            )
        value: Any = epochs
        for op, operand in self.steps:
            value = _OPS[op](value, operand)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and value >= 1:
            return value
        fix = (
            "use // to get whole epochs (e.g. EPOCHS * 3 // 4, not EPOCHS * 0.75)"
            if isinstance(value, float)
            else "train more epochs, or use an expression that stays above 0 (e.g. "
            "EPOCHS // 2 rather than EPOCHS - 10)"
        )
        raise ConfigError(
            f"{where} is {self!r}, which must be a positive integer, but for a run of "
            f"{epochs} epochs it is {value!r}; {fix}"
        )


#: The epoch count of the run being built (see :class:`EpochsExpr`).
EPOCHS = EpochsExpr()


def resolve_epochs(value: Any, epochs: int | None, where: str) -> Any:
    """Replace every :data:`EPOCHS` expression in ``value`` by its value for this run.

    Expressions inside lists, tuples and dicts (``milestones=[EPOCHS // 2]``) are replaced
    too; anything else, and a container without expressions, is returned as it is.

    Args:
        value: An argument value.
        epochs: The epochs of the run being built (``None``: unknown).
        where: What the value is for, for errors (``"scheduler argument 'T_max'"``).

    Returns:
        ``value`` with every expression replaced by a positive integer.

    Raises:
        ConfigError: If an expression cannot be resolved (see :meth:`EpochsExpr.resolve`).

    """
    if isinstance(value, EpochsExpr):
        return value.resolve(epochs, where)
    if type(value) in (list, tuple):
        items = [resolve_epochs(v, epochs, f"{where}[{i}]") for i, v in enumerate(value)]
        changed = any(new is not old for new, old in zip(items, value))
        return type(value)(items) if changed else value
    if type(value) is dict:
        pairs = {k: resolve_epochs(v, epochs, f"{where}[{k!r}]") for k, v in value.items()}
        return pairs if any(pairs[k] is not v for k, v in value.items()) else value
    return value
