"""The ``if __name__ == "__main__":`` guard that spawned workers need in a user's script.

A spawned worker process imports the parent's main script again before it runs. A search
started at the script's top level, outside the guard, would then start again in every
worker; CPython's spawn fails there, and the parent, still writing the worker's payload into
a pipe that the failed worker never reads, waits forever. :func:`check_main_guard` finds
that case before any worker starts and says how to fix it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from hpo_trainer.base.errors import ConfigError


def _is_guard(node: ast.stmt) -> bool:
    """Return whether ``node`` is ``if __name__ == "__main__":`` (either side first)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    if len(node.test.ops) != 1 or not isinstance(node.test.ops[0], ast.Eq):
        return False
    sides = [node.test.left, *node.test.comparators]
    names = {s.id for s in sides if isinstance(s, ast.Name)}
    texts = {s.value for s in sides if isinstance(s, ast.Constant)}
    return names == {"__name__"} and texts == {"__main__"}


def unguarded_line() -> tuple[Path, int] | None:
    """Return the main script and the top-level line running now, if it is outside the guard.

    ``None`` when there is no main script (an interactive session, ``python -c``), when the
    call does not come from the script's top level, or when that line is under the guard.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path or not str(path).endswith(".py"):
        return None
    frame = sys._getframe()
    while frame is not None and not (
        frame.f_globals is main.__dict__ and frame.f_code.co_name == "<module>"
    ):
        frame = frame.f_back
    if frame is None:
        return None
    line = frame.f_lineno
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if node.lineno <= line <= (node.end_lineno or node.lineno):
            return None if _is_guard(node) else (Path(path), line)
    return None


def check_main_guard(n_workers: int) -> None:
    """Refuse to spawn workers from a script's top level outside ``if __name__ == "__main__":``.

    Raises:
        ConfigError: Naming the script's line and the fix.

    """
    found = unguarded_line()
    if found is None:
        return
    path, line = found
    raise ConfigError(
        f"n_workers={n_workers} starts worker processes, and each imports {str(path)!r} "
        f'again: line {line}, outside `if __name__ == "__main__":`, would start the search '
        "again in every worker, which then hangs. Put the code that searches under "
        '`if __name__ == "__main__":` (with models and datasets defined at module level), '
        "or use a study file with `hpo-trainer search`"
    )
