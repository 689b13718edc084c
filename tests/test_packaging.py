"""What a user who installs hpo-trainer gets: a typed package (PEP 561's ``py.typed``).

The package is built from this source tree and installed into a temporary folder with pip,
as a user's install would; the installed distribution's own file list (its ``RECORD``) must
name ``hpo_trainer/py.typed`` and the file must be there. A file in the source tree proves
nothing: a missing ``package-data`` entry would leave it out of every wheel.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_package_ships_py_typed(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "hpo_trainer", source / "hpo_trainer", ignore=shutil.ignore_patterns("__pycache__")
    )
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    pip += ["--no-deps", "--no-index", "--no-build-isolation", "--target", str(target)]
    out = subprocess.run([*pip, str(source)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr

    (dist,) = importlib.metadata.distributions(path=[str(target)])
    assert dist.metadata["Name"] == "hpo-trainer"
    files = {str(f) for f in dist.files or []}
    assert "hpo_trainer/py.typed" in files, sorted(files)
    assert Path(dist.locate_file("hpo_trainer/py.typed")).is_file()


def test_the_imported_package_has_py_typed_beside_it():
    # Whatever install this is (editable here), the package a type checker finds is typed.
    assert importlib.resources.files("hpo_trainer").joinpath("py.typed").is_file()
