"""Shared fixtures and the two test tiers.

Fixtures: the real digits data, the digits study's trainer, and the real servers
(PostgreSQL, Redis) and the headless browser that some tests need.

Services and the browser follow one rule: when CI asks for them (``.ci/run`` sets
``HPO_TRAINER_POSTGRES_URL``, ``HPO_TRAINER_REDIS_URL`` and ``HPO_TRAINER_REQUIRE_BROWSER``)
a test that needs one fails if it is missing; elsewhere it is skipped with a one-line reason.

Tiers: ``make test-fast`` runs ``pytest -m "not slow"`` (the space, the loop, checkpoints,
callbacks, pruning decisions, the CLI parser); ``make test`` runs everything. The marks are
set here, by module (:data:`FAST_MODULES`; every other module is slow), so that test owners
need not mark each test; :data:`SLOW_TESTS` marks the slow tests of the fast modules.
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

#: The fast tier's modules: unit tests of the space, the loop, checkpoints, callbacks, pruning
#: decisions, re-queue and clean-up, the CLI parser, bad input, the architecture and the static
#: container checks. Every other module (searches, subprocesses, servers, the browser, and any
#: new module until it is listed here) is slow, so the fast tier stays fast as tests are added.
FAST_MODULES = frozenset(
    {
        "test_architecture",
        "test_bad_input",
        "test_callbacks",
        "test_checkpoint",
        "test_cli_parser",
        "test_containers",
        "test_data",
        "test_epochs",
        "test_heartbeat",
        "test_inputs",
        "test_objectives",
        "test_outputs",
        "test_pruning",
        "test_space",
        "test_trainer",
        "test_trial",
    }
)
#: Slow tests in otherwise fast modules, by module and test name (without parameters).
SLOW_TESTS = frozenset(
    {
        # subprocess runs of the hpo-trainer command (about 3 seconds each)
        ("test_bad_input", "test_command_line_bad_input"),
        ("test_bad_input", "test_postgresql_url_without_a_driver_suffix"),
        # searches in subprocesses
        ("test_architecture", "test_a_search_runs_without_fcntl"),
        # one multi-objective search of the digits study, read back
        ("test_objectives", "test_a_multi_objective_search_from_the_command_line"),
        ("test_objectives", "test_status_shows_the_pareto_front"),
        ("test_objectives", "test_export_writes_the_front_and_picks_a_trial"),
        ("test_objectives", "test_report_has_the_pareto_plot"),
        ("test_objectives", "test_python_api_continues_and_refuses_other_objectives"),
    }
)


def pytest_configure(config):
    # Registered here rather than in pyproject.toml: the Makefile reinstalls the virtualenv
    # whenever pyproject.toml changes.
    config.addinivalue_line(
        "markers", "slow: searches, subprocesses, servers or the browser; not in `make test-fast`"
    )


def pytest_collection_modifyitems(config, items):
    """Mark the slow tier (see the module docs)."""
    slow = pytest.mark.slow
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        name = getattr(item, "originalname", None) or item.name.partition("[")[0]
        if module not in FAST_MODULES or (module, name) in SLOW_TESTS:
            item.add_marker(slow)


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
