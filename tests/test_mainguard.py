"""A script that searches with several workers outside ``if __name__ == "__main__":`` gets a
clear error at once, instead of a parent that waits forever on its spawned workers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hpo_trainer.search.mainguard import _is_guard

STUDIES = Path(__file__).resolve().parents[1] / "studies"


@pytest.mark.parametrize(
    ("source", "guard"),
    [
        ('if __name__ == "__main__":\n    pass', True),
        ("if '__main__' == __name__:\n    pass", True),
        ('if __name__ != "__main__":\n    pass', False),  # runs in the workers too
        ("if True:\n    pass", False),
        ('if name == "__main__":\n    pass', False),
        ("x = 1", False),
    ],
)
def test_the_guard_is_recognised(source, guard):
    assert _is_guard(ast.parse(source).body[0]) is guard


def test_an_unguarded_script_is_refused_before_any_worker_starts(tmp_path):
    script = tmp_path / "search_me.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(STUDIES)!r})
            from digits_mlp import make_trainer
            tr = make_trainer(runs_dir={str(tmp_path / "runs")!r}, quiet=True)
            tr.hyp_opt(epochs=1, iters=2, n_workers=2)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert 'line 6, outside `if __name__ == "__main__":`' in proc.stderr
    assert "bootstrapping phase" not in proc.stderr  # no worker was started
