"""Conditional parameters: the order in which a space draws them (parents first)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hpo_trainer.errors import SpaceError


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
