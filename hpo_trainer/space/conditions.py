"""Conditional parameters: how a condition is written, and the order of drawing (parents first)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hpo_trainer.base.errors import SpaceError
from hpo_trainer.space.dimensions import choice_label


def parse_when(name: str, when: Mapping[str, Any] | None) -> dict[str, tuple[Any, ...]]:
    """Return the condition ``when`` of ``name`` as parent name -> labels of its values.

    Args:
        name: The name the condition is for.
        when: ``{parent name: value or list of values}``, e.g. ``{"class": SGD}``; ``None``
            for no condition.

    Returns:
        Parent name -> the labels (see :func:`~.dimensions.choice_label`) of the values
        under which ``name`` applies; empty for no condition.

    Raises:
        SpaceError: If ``when`` is not a mapping, or ``name`` depends on itself.

    """
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
        conditions[parent] = tuple(choice_label(v) for v in many)
    return conditions


def parents_first(parents: Mapping[str, Iterable[str]]) -> list[str]:
    """Return the names in an order where every parent comes before the names under it.

    Args:
        parents: Each name's parents (the names its condition refers to); parents that are
            not keys are ignored.

    Returns:
        The names, parents first; otherwise in the order given.

    Raises:
        SpaceError: If the conditions form a cycle.

    """
    order: list[str] = []
    state: dict[str, int] = {}  # 1: being visited, 2: placed

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join((*path, name))
            raise SpaceError(f"conditions form a cycle: {cycle}; remove one of them")
        state[name] = 1
        for parent in parents[name]:
            if parent in parents:
                visit(parent, (*path, name))
        state[name] = 2
        order.append(name)

    for name in parents:
        visit(name, ())
    return order
