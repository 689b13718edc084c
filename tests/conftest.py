"""Shared fixtures: the real digits data and the digits study's trainer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "studies"
sys.path.insert(0, str(STUDIES))
sys.path.insert(0, str(ROOT / "tests"))


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
    from hpo_trainer.studyfile import load_trainer_from_file

    def make(**options):
        options.setdefault("runs_dir", tmp_path / "runs")
        options.setdefault("quiet", True)
        return load_trainer_from_file(STUDIES / "digits_mlp.py", **options)

    return make
