"""The package's shape: no import cycles (function-level imports included), dependencies that
point down the layers, a training layer without Optuna, and no hard dependency on ``fcntl``.

The import graph is read from the source with ``ast``: every ``import`` and ``from ... import``
at module or function level, except those under ``if TYPE_CHECKING:`` (never run).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hpo_trainer"
#: Top-level modules above the search layer: the facade and the commands.
FACADES = ("trainer", "studyfile", "cli", "export", "final", "report")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Yield every import node that can run: module and function level, not TYPE_CHECKING."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from (n for child in node.orelse for n in _imports_in(child))
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _imports(node)


def _resolve(module: str, node: ast.AST) -> list[str]:
    """The package modules an import node loads (``from a import b``: ``a.b`` if a module)."""
    is_package = MODULES[module].name == "__init__.py"
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        names = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            names.append(sub if sub in MODULES else base)
    found = []
    for name in names:
        # `import hpo_trainer.a.b` loads hpo_trainer.a.b; take the deepest package module
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name.startswith("hpo_trainer"):
            found.append(name)
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = {t for node in _imports(tree) for t in _resolve(module, node)}
        # importing a.b.c always runs a and a.b first: that edge is implicit, not a dependency
        parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        graph[module] = targets - parents - {module}
    return graph


def _external(tree: ast.AST) -> set[str]:
    names = set()
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt, black) == grey:
                return [*stack[stack.index(nxt) :], nxt]
            if colour.get(nxt) == white and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        colour[node] = black
        return None

    for node in sorted(graph):
        if colour[node] == white and (cycle := visit(node)):
            return cycle
    return None


SAMPLE = """
from typing import TYPE_CHECKING
import a
if TYPE_CHECKING:
    import hidden
else:
    import shown_else
def f():
    import in_function
    class C:
        def g(self):
            from in_method import x
try:
    import in_try
except ImportError:
    in_try = None
"""


def test_the_graph_reader_sees_function_level_imports_and_skips_type_checking():
    seen = _external(ast.parse(SAMPLE))
    assert seen == {"typing", "a", "shown_else", "in_function", "in_method", "in_try"}
    graph = _graph()
    assert set(graph) == set(MODULES) and len(graph) > 20
    # pruning imports FitState only under TYPE_CHECKING, Callback for real
    assert "hpo_trainer.train.state" not in graph["hpo_trainer.search.pruning"]
    assert "hpo_trainer.train.callback" in graph["hpo_trainer.search.pruning"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


#: The layers that know PyTorch (or nothing) but not Optuna.
LOWER = ("hpo_trainer.train", "hpo_trainer.space")


def _forbidden(packages: tuple[str, ...], banned: tuple[str, ...]) -> list[str]:
    bad = []
    for module, targets in _graph().items():
        if _within(module, packages):
            bad += [
                f"{module} imports {t}"
                for t in sorted(targets)
                if t == "hpo_trainer" or _within(t, banned)
            ]
    return bad


def test_training_layer_and_space_never_import_the_search_or_the_facade():
    banned = ("hpo_trainer.search", *(f"hpo_trainer.{m}" for m in FACADES))
    assert _forbidden(LOWER, banned) == []


def test_search_layer_never_imports_the_facade_or_the_commands():
    banned = tuple(f"hpo_trainer.{m}" for m in FACADES)
    assert _forbidden(("hpo_trainer.search",), banned) == []


def test_no_module_imports_optuna_in_the_training_layer_or_fcntl_anywhere():
    bad = []
    for module, path in MODULES.items():
        used = _external(ast.parse(path.read_text()))
        if "fcntl" in used:
            bad.append(f"{module} imports fcntl")
        if _within(module, LOWER) and "optuna" in used:
            bad.append(f"{module} imports optuna")
    assert bad == []


def _python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_importing_the_training_layer_does_not_import_optuna():
    layer = sorted(m for m in MODULES if _within(m, LOWER))
    proc = _python(
        f"""
        import importlib, json, sys
        for name in {layer!r}:
            importlib.import_module(name)
        import hpo_trainer
        hpo_trainer.Hyperparameters, hpo_trainer.fit, hpo_trainer.EarlyStopping
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "optuna")))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [], "the training layer imported optuna"
    assert "hpo_trainer.train.loop" in layer and "hpo_trainer.trainer" not in layer


NO_FCNTL = """
    import sys
    sys.modules["fcntl"] = None  # `import fcntl` now raises ImportError, as on Windows
    import warnings
    warnings.simplefilter("ignore")
    import filelock
    from filelock import SoftFileLock
    assert not filelock.has_fcntl and filelock.FileLock is SoftFileLock, filelock.FileLock
    sys.path.insert(0, "studies")
    import hpo_trainer
    from hpo_trainer.search.locks import budget_lock
    from hpo_trainer.search.storage import open_storage
    from hpo_trainer.studyfile import load_trainer_from_file

    url = "sqlite:///{tmp}/study.db"
    lock = budget_lock(url, open_storage(url), "digits_mlp")
    assert isinstance(lock, SoftFileLock), type(lock)
    with lock:
        pass
    tr = load_trainer_from_file("studies/digits_mlp.py", runs_dir="{tmp}/runs", quiet=True)
    study = tr.hyp_opt(epochs=1, iters=2, storage=url, seed=0)
    assert "fcntl" not in sys.modules or sys.modules["fcntl"] is None
    print(len(study.trials), sorted({{t.state.name for t in study.trials}}))
"""


@pytest.mark.slow
def test_a_search_runs_without_fcntl(tmp_path):
    """Without ``fcntl`` (Windows), filelock falls back to its soft lock; hpo_trainer has no
    hard dependency on fcntl, so a search still runs under the budget lock."""
    proc = _python(NO_FCNTL.format(tmp=tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[0] == "2"
    assert "COMPLETE" in proc.stdout or "PRUNED" in proc.stdout
