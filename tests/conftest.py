"""Shared fixtures and the two test tiers.

Fixtures: the real digits data, the digits study's trainer, and the real servers
(PostgreSQL, Redis) and the headless browser that some tests need.

Services and the browser follow one rule: when CI asks for them (``.ci/run`` sets
``HPO_TRAINER_POSTGRES_URL``, ``HPO_TRAINER_REDIS_URL`` and ``HPO_TRAINER_REQUIRE_BROWSER``)
a test that needs one fails if it is missing; elsewhere it is skipped with a one-line reason.

Tiers: ``make test-fast`` runs ``pytest -m "fast and not slow"`` (the space, the loop,
checkpoints, callbacks, pruning decisions, the CLI parser); ``make test`` runs everything. Each
test carries its tier itself: a fast module says ``pytestmark = pytest.mark.fast`` below its
imports, and a slow test inside it says ``@pytest.mark.slow`` (``slow`` overrides ``fast``,
which is why the fast tier excludes it). A test with no tier mark is slow, deliberately: a
new module (searches, subprocesses, servers, the browser) cannot slow the fast tier down
until its owner marks it fast. Both marks are registered in ``pyproject.toml``, and
``--strict-markers`` turns a misspelt one into a collection error rather than a silent slow.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "studies"
sys.path.insert(0, str(STUDIES))
sys.path.insert(0, str(ROOT / "tests"))


def pytest_collection_modifyitems(config, items):
    """Mark every test without a tier mark slow (see the module docs)."""
    for item in items:
        if item.get_closest_marker("fast") is None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models on a 2-core machine shared with worker processes: one thread each, or
    every parallel op waits for a busy core (runs then take 10x longer)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    from digits_mlp import load_digits_split

    return load_digits_split()


@pytest.fixture
def make_trainer(tmp_path):
    """Build the digits MLP study's trainer with runs under a temporary folder."""
    from hpo_trainer.facade.studyfile import load_trainer_from_file

    def make(**options):
        options.setdefault("runs_dir", tmp_path / "runs")
        options.setdefault("quiet", True)
        return load_trainer_from_file(STUDIES / "digits_mlp.py", **options)

    return make


# -- the real servers and the browser -----------------------------------------------------


def _required(env: str) -> bool:
    return os.environ.get(env, "").strip().lower() not in ("", "0", "false", "no")


def _service(env: str, default: str, probe) -> str:
    """The URL in ``env`` (required: fail if unreachable), else ``default`` (skip if down)."""
    url = os.environ.get(env)
    try:
        probe(url or default)
    except Exception as exc:
        if url:
            pytest.fail(f"{env}={url} is set but the server cannot be reached: {exc}")
        pytest.skip(f"no server at {default} (set {env} to require one)")
    return url or default


@pytest.fixture(scope="session")
def pg_url():
    """A PostgreSQL storage URL (``HPO_TRAINER_POSTGRES_URL``, else the local server)."""

    def probe(url):
        from hpo_trainer.search.storage import open_storage

        open_storage(url)

    return _service(
        "HPO_TRAINER_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test", probe
    )


@pytest.fixture(scope="session")
def redis_url():
    """A Redis storage URL (``HPO_TRAINER_REDIS_URL``, else the local server)."""

    def probe(url):
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=2).ping()

    return _service("HPO_TRAINER_REDIS_URL", "redis://127.0.0.1:6379/0", probe)


BROWSER_ENV = "HPO_TRAINER_REQUIRE_BROWSER"


@pytest.fixture(scope="session")
def chromium():
    """The path of a headless Chromium: required when ``HPO_TRAINER_REQUIRE_BROWSER`` is set
    (``.ci/run`` sets it after ``make browser``), skipped otherwise."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if _required(BROWSER_ENV):
            pytest.fail(f"{BROWSER_ENV} is set but chromium is not installed: run `make browser`")
        pytest.skip(f"no chromium on PATH (`make browser` installs it; {BROWSER_ENV}=1 requires)")
    return path
