"""The contract with Optuna: one adapter owns its private internals, and what the engine needs
from Optuna holds on the lowest and the highest version ``pyproject.toml`` allows.

``make install`` puts the lowest allowed Optuna in ``.venv/optuna-lowest``; the venv itself
has the highest. ``tests/optuna_contract.py`` runs the checks under each (see its docs).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hpo_trainer"
ADAPTER = PACKAGE / "search" / "optuna_api.py"
LOWEST_DIR = ROOT / ".venv" / "optuna-lowest"
#: Public API that starts with ``_``: ``os._exit``, ``sys._getframe``, a namedtuple's fields.
PUBLIC = {("os", "_exit"), ("sys", "_getframe"), (None, "_fields")}


def _requirement() -> Requirement:
    text = (ROOT / "pyproject.toml").read_text()
    (line,) = re.findall(r'^\s*"(optuna[<>=!~].*?)"', text, flags=re.M)
    return Requirement(line)


def _private_use(node: ast.AST) -> str | None:
    """The private name ``node`` reaches, if any (see :func:`_private_uses`)."""
    if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
        owner = node.value.id if isinstance(node.value, ast.Name) else None
        dunder = node.attr.startswith("__") and node.attr.endswith("__")
        # super()._hook(...): a documented override hook (torch's _load_from_state_dict)
        hook = isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "super"
        if not (dunder or hook or owner in ("self", "cls") or (owner, node.attr) in PUBLIC):
            return f".{node.attr}"
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "hasattr", "setattr")
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        name = node.args[1].value
        if name.startswith("_") and not name.startswith("__") and (None, name) not in PUBLIC:
            return repr(name)
    return None


def _private_uses(path: Path) -> list[str]:
    """Every ``x._name`` (x not self, cls or super()) and ``getattr(x, "_name")`` in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.name}:{node.lineno} {use}"
        for node in ast.walk(tree)
        if (use := _private_use(node)) is not None
    ]


def test_only_the_adapter_touches_private_attributes():
    outside = [
        use
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != ADAPTER
        for use in _private_uses(path)
    ]
    assert outside == [], "move these into hpo_trainer/search/optuna_api.py"
    assert len(_private_uses(ADAPTER)) >= 5  # the reader sees them where they are


def test_the_private_use_reader_sees_attributes_and_getattr(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nos._exit(0)\nself._a = 1\nstudy._storage.get()\n"
        "getattr(p, '_wrapped', None)\nx.__class__\n"
    )
    uses = [u.split(" ", 1)[1] for u in _private_uses(sample)]
    assert sorted(uses) == ["'_wrapped'", "._storage"]


def test_no_module_reads_optuna_tables_with_raw_sql():
    tables = re.compile(
        r"\b(FROM|JOIN|UPDATE|INTO)\s+(trials|studies|trial_\w+|study_\w+)\b", re.I
    )
    hits = [
        f"{path.relative_to(ROOT)}: {m.group(0)}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for m in tables.finditer(path.read_text())
    ]
    assert hits == []


def test_the_allowed_range_is_the_tested_range():
    spec = _requirement().specifier
    lowest = min(Version(s.version) for s in spec if s.operator == ">=")
    upper = min(Version(s.version) for s in spec if s.operator == "<")
    installed = Version(optuna.__version__)
    assert installed in spec, f"the venv's optuna {installed} is outside {spec}"
    # the venv holds the highest allowed release line: nothing newer would pass the range
    assert (installed.major, installed.minor + 1) == (upper.major, upper.minor), (installed, spec)
    found = sorted(LOWEST_DIR.glob("optuna-*.dist-info"))
    assert found, f"no lowest Optuna in {LOWEST_DIR}: run `make install`"
    (dist,) = found
    assert Version(dist.name.removesuffix(".dist-info").split("-")[1]) == lowest, dist.name


@pytest.mark.parametrize("end", ["highest", "lowest"])
def test_the_contract_holds_at_both_ends_of_the_range(end, tmp_path, redis_url, pg_url):
    env = dict(os.environ)
    if end == "lowest":
        assert LOWEST_DIR.is_dir(), f"no lowest Optuna in {LOWEST_DIR}: run `make install`"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LOWEST_DIR), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests/optuna_contract.py"), str(tmp_path), redis_url, pg_url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    expected = (
        min(Version(s.version) for s in _requirement().specifier if s.operator == ">=")
        if end == "lowest"
        else Version(optuna.__version__)
    )
    match = re.search(r"optuna (\S+): (\d+) checks passed", proc.stdout)
    assert match, proc.stdout
    assert Version(match.group(1)) == expected and int(match.group(2)) >= 4
