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

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hpo_trainer"
#: Every module's layer, by package: a module not named here fails the map test. Bottom up.
LAYERS = {
    "base": ("hpo_trainer._version", "hpo_trainer.base"),
    "space": ("hpo_trainer.space",),
    "train": ("hpo_trainer.train",),
    "codec": ("hpo_trainer.codec",),
    "search": ("hpo_trainer.search",),
    "facade": ("hpo_trainer.facade",),
    "apps": ("hpo_trainer.apps",),
    "cli": ("hpo_trainer.cli",),
    "package": ("hpo_trainer",),  # the public surface re-exports every layer, lazily
}
#: What each layer may import besides itself. The spaces and the training layer know nothing
#: of each other; the package root alone may reach every layer.
MAY_IMPORT = {
    "base": set(),
    "space": {"base"},
    "train": {"base"},
    "codec": {"base", "space"},
    "search": {"base", "space", "train", "codec"},
    "facade": {"base", "space", "train", "codec", "search"},
    "apps": {"base", "space", "train", "codec", "search", "facade"},
    "cli": {"base", "space", "train", "codec", "search", "facade", "apps"},
    "package": {"base", "space", "train", "codec", "search", "facade", "apps", "cli"},
}


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


def _layer_of(module: str) -> str | None:
    """The layer whose package holds ``module``; the package root only for itself."""
    if module == "hpo_trainer":
        return "package"
    found = [
        (len(prefix), layer)
        for layer, prefixes in LAYERS.items()
        if layer != "package"
        for prefix in prefixes
        if _within(module, (prefix,))
    ]
    return max(found)[1] if found else None


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import that reaches a layer its module's layer may not use."""
    bad = []
    for module, targets in sorted(graph.items()):
        layer = _layer_of(module)
        for target in sorted(targets):
            other = _layer_of(target)
            if other != layer and other not in MAY_IMPORT[layer]:
                bad.append(f"{module} ({layer}) imports {target} ({other})")
    return bad


#: The layers that know PyTorch (or nothing) but not Optuna.
LOWER = ("hpo_trainer.train", "hpo_trainer.space", "hpo_trainer.base")


def test_the_layer_map_names_every_module():
    unmapped = [m for m in MODULES if _layer_of(m) is None]
    assert unmapped == [], f"modules outside every layer (add them to LAYERS): {unmapped}"
    assert set(MAY_IMPORT) == set(LAYERS)
    # each layer holds real modules: a renamed package would leave an empty entry behind
    assert all(any(_layer_of(m) == layer for m in MODULES) for layer in LAYERS)


def test_no_import_reaches_up_a_layer():
    assert _upward_imports(_graph()) == []


@pytest.mark.parametrize(
    ("module", "target"),
    [
        ("hpo_trainer.train.loop", "hpo_trainer.search.trial"),
        ("hpo_trainer.space.dimensions", "hpo_trainer.train.loop"),
        ("hpo_trainer.base.files", "hpo_trainer.codec.params"),
        ("hpo_trainer.search.worker", "hpo_trainer.facade.trainer"),
        ("hpo_trainer.facade.trainer", "hpo_trainer.apps.final"),
        ("hpo_trainer.apps.export", "hpo_trainer.cli.commands"),
        ("hpo_trainer.search.trial", "hpo_trainer"),
    ],
)
def test_an_upward_import_into_any_layer_fails_the_check(module, target):
    graph = {m: set(t) for m, t in _graph().items()}
    assert module in graph and (target in graph)
    graph[module].add(target)
    assert _upward_imports(graph) == [
        f"{module} ({_layer_of(module)}) imports {target} ({_layer_of(target)})"
    ]


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
    assert "hpo_trainer.train.loop" in layer and "hpo_trainer.facade.trainer" not in layer


#: Run in a fresh interpreter where ``fcntl`` exists: import every module, then name each module
#: that ran ``import fcntl`` or holds the fcntl module; then do the same after a probe module
#: under ``hpo_trainer`` imports it, to show that the check sees one that does.
FCNTL_USERS = """
    import builtins, importlib, json, sys, types

    importers = set()
    real_import = builtins.__import__

    def spy(name, globals=None, locals=None, fromlist=(), level=0):
        if not level and name.split(".")[0] == "fcntl":
            importers.add((globals or {{}}).get("__name__", "?"))
        return real_import(name, globals, locals, fromlist, level)

    def users():
        fcntl = sys.modules.get("fcntl")
        holders = {{
            name
            for name, module in list(sys.modules.items())
            if fcntl is not None and name not in ("__main__", "__mp_main__")
            and any(value is fcntl for value in getattr(module, "__dict__", {{}}).values())
        }}
        return {{"loaded": fcntl is not None, "users": sorted(importers | holders)}}

    builtins.__import__ = spy
    for name in {modules!r}:
        importlib.import_module(name)
    found = users()
    probe = types.ModuleType("hpo_trainer._probe")
    sys.modules[probe.__name__] = probe
    exec("import fcntl", probe.__dict__)
    print(json.dumps({{"found": found, "probe": users()}}))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no fcntl to import")
def test_no_hpo_trainer_module_imports_fcntl_even_where_it_exists():
    """filelock imports fcntl for its Unix lock (so do parts of the standard library); no
    hpo_trainer module may, at module or function level, while being imported."""
    modules = sorted(m for m in MODULES if not m.endswith(".__main__"))
    proc = _python(FCNTL_USERS.format(modules=modules))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    found = result["found"]
    assert found["loaded"], "nothing imported fcntl, so this check saw nothing"
    assert any(m.startswith("filelock.") for m in found["users"]), found
    assert [m for m in found["users"] if _within(m, ("hpo_trainer",))] == []
    # the same check, after a module of ours imported it
    assert "hpo_trainer._probe" in result["probe"]["users"], result["probe"]


#: Run in a fresh interpreter where ``import fcntl`` fails, as on Windows: a search of two
#: trials in this process, counting which lock class every acquire of a file lock used.
NO_FCNTL = """
    import json, sys
    sys.modules["fcntl"] = None  # `import fcntl` now raises ImportError, as on Windows
    import warnings
    warnings.simplefilter("ignore")
    import filelock
    from filelock import BaseFileLock

    acquired = []
    real_acquire = BaseFileLock.acquire

    def acquire(self, *args, **kwargs):
        acquired.append([type(self).__name__, str(self.lock_file)])
        return real_acquire(self, *args, **kwargs)

    BaseFileLock.acquire = acquire
    sys.path.insert(0, "studies")
    from hpo_trainer.facade.studyfile import load_trainer_from_file
    from hpo_trainer.search import search

    tr = load_trainer_from_file("studies/digits_mlp.py", runs_dir="{tmp}/runs", quiet=True)
    outcome = search(
        tr, epochs=1, n_trials=2, storage="sqlite:///{tmp}/study.db", pruner="none", seed=0
    )
    print(json.dumps({{
        "has_fcntl": filelock.has_fcntl,
        "finished": outcome.finished,
        "stopped_by": outcome.stopped_by,
        "problem": outcome.problem,
        "states": [t.state.name for t in outcome.study.trials],
        "acquired": acquired,
    }}))
"""


@pytest.mark.slow  # a search in a subprocess
def test_a_search_runs_without_fcntl(tmp_path):
    """Without ``fcntl`` (Windows), filelock falls back to its soft lock; the search takes the
    budget lock through it for every trial and finishes its budget."""
    proc = _python(NO_FCNTL.format(tmp=tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["has_fcntl"] is False
    assert (result["finished"], result["stopped_by"], result["problem"]) == (2, "budget", None)
    assert result["states"] == ["COMPLETE", "COMPLETE"]
    # the worker ran here, under the study's lock file, and only the soft lock was taken
    budget = [
        kind for kind, path in result["acquired"] if path.startswith(f"{tmp_path}/study.db.")
    ]
    assert len(budget) >= 2, result["acquired"]
    assert {kind for kind, _ in result["acquired"]} == {"SoftFileLock"}, result["acquired"]
