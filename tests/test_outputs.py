"""Files a user names with ``--out``: never written over what the command reads.

``export`` and ``report`` are driven in-process with :func:`hpo_trainer.cli.main`, the way a
user types them, on a small study made with Optuna in the test's folder; the refused file
must come out byte-for-byte intact, and nothing else may appear beside it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import optuna
import pytest

from hpo_trainer import cli
from hpo_trainer.base.errors import ConfigError
from hpo_trainer.base.files import write_output

pytestmark = pytest.mark.fast

STUDY_TEXT = "def make_trainer():\n    raise NotImplementedError\n"


@pytest.fixture
def study_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with ``runs/studies.db`` (one study, 3 trials) made by ``studies/tiny.py``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_TRAINER_STORAGE", raising=False)
    monkeypatch.delenv("HPO_TRAINER_RUNS_DIR", raising=False)
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "tiny.py").write_text(STUDY_TEXT)
    (tmp_path / "runs").mkdir()
    _make_study(f"sqlite:///{tmp_path / 'runs' / 'studies.db'}", tmp_path / "studies" / "tiny.py")
    assert cli.main(["status"]) == 0  # hpo-trainer puts the file in WAL mode when it opens it
    return tmp_path


def _make_study(url: str, study_file: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="tiny", storage=url)
    study.set_user_attr("hpo:study_file", str(study_file.resolve()))
    for lr in (0.1, 0.01, 0.001):
        study.enqueue_trial({"optimizer.lr": lr})
    study.optimize(lambda t: t.suggest_float("optimizer.lr", 1e-4, 1.0, log=True), n_trials=3)


def _listing(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden temporary files included) and its bytes.

    SQLite's own ``-wal`` and ``-shm`` files are left out: any reader changes them.
    """
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink() and not p.name.endswith(("-wal", "-shm"))
    }


def _refused(argv: list[str], folder: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command, assert it failed and changed no file; return its error message."""
    before = _listing(folder)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert _listing(folder) == before  # nothing replaced, nothing half-written beside it
    return " ".join(err.split())


@pytest.mark.parametrize("command", ["export", "report"])
def test_out_that_is_the_study_database_is_refused(study_dir, capsys, command):
    err = _refused([command, "--out", "runs/studies.db"], study_dir, capsys)
    assert "must not be a file this command reads" in err
    assert "'runs/studies.db' is the same file as 'runs/studies.db'" in err
    assert "Give another file, e.g. 'runs/" in err
    # the study is all there
    study = optuna.load_study(study_name="tiny", storage="sqlite:///runs/studies.db")
    assert len(study.trials) == 3


@pytest.mark.parametrize("link", ["symlink", "hardlink", "absolute"])
def test_another_name_for_the_study_database_is_refused(study_dir, capsys, link):
    db = study_dir / "runs" / "studies.db"
    other = study_dir / "other.json"
    if link == "symlink":
        other.symlink_to(db)
    elif link == "hardlink":
        os.link(db, other)
    else:
        other = db
    err = _refused(["export", "--out", str(other)], study_dir, capsys)
    assert "must not be a file this command reads" in err and "is the same file as" in err


@pytest.mark.parametrize("command", ["export", "report"])
def test_out_that_is_the_study_file_is_refused(study_dir, capsys, command):
    err = _refused([command, "--out", "studies/tiny.py"], study_dir, capsys)
    assert f"is the same file as {str(study_dir / 'studies' / 'tiny.py')!r}" in err
    assert (study_dir / "studies" / "tiny.py").read_text() == STUDY_TEXT


def test_the_journal_file_of_a_journal_storage_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.py").write_text(STUDY_TEXT)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    journal = tmp_path / "study.log"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="tiny", storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    study.optimize(lambda t: t.suggest_float("optimizer.lr", 1e-4, 1.0, log=True), n_trials=2)
    argv = ["export", "--storage", "journal:study.log", "--out", "study.log"]
    err = _refused(argv, tmp_path, capsys)
    assert "'study.log' is the same file as 'study.log'" in err
    assert cli.main(["export", "--storage", "journal:study.log", "--out", "best.json"]) == 0
    assert json.loads((tmp_path / "best.json").read_text())["study"] == "tiny"


@pytest.mark.parametrize(
    ("command", "out", "match"),
    [
        (
            "export",
            "best.txt",
            "must end in .json, got 'best.txt'; give a file such as 'best.json'",
        ),
        ("export", "runs/best.db", "must end in .json, got 'runs/best.db'"),
        ("report", "report.json", "must end in .html or .htm, got 'report.json'"),
    ],
)
def test_a_suffix_the_command_does_not_write_is_refused(study_dir, capsys, command, out, match):
    err = _refused([command, "--out", out], study_dir, capsys)
    assert match in err
    assert not (study_dir / out).exists()


def test_a_sqlite_database_is_never_written_over_whatever_its_name(study_dir, capsys):
    # a copy of the database under a .json name: the command does not read it, but it is a
    # study storage all the same
    copy = study_dir / "looks_like.json"
    shutil.copyfile(study_dir / "runs" / "studies.db", copy)
    err = _refused(["export", "--out", "looks_like.json"], study_dir, capsys)
    assert "must not be a SQLite database (a study storage), but 'looks_like.json' is one" in err
    # for any command: predict's --out, a final run's summary
    shutil.copyfile(copy, study_dir / "a.csv")
    with pytest.raises(ConfigError, match=r"must not be a SQLite database.*'a\.csv' is one"):
        write_output(b"class\n1\n", "a.csv", "predictions.csv")
    assert (study_dir / "a.csv").read_bytes() == copy.read_bytes()


def test_export_and_report_still_write_their_files(study_dir, capsys):
    assert cli.main(["export", "--out", "out/best.json"]) == 0
    record = json.loads((study_dir / "out" / "best.json").read_text())
    assert record["params"] == {"optimizer": {"lr": 0.001}} and record["trial"] == 2
    assert record["study_file"] == str(study_dir / "studies" / "tiny.py")
    # an existing export is replaced, as before
    assert cli.main(["export", "--out", "out/best.json", "--trial", "0"]) == 0
    assert json.loads((study_dir / "out" / "best.json").read_text())["trial"] == 0
    assert cli.main(["report", "--out", "report.HTML"]) == 0
    assert "<h1>Study tiny</h1>" in (study_dir / "report.HTML").read_text()


def test_write_output_refuses_what_it_was_told_is_read(tmp_path):
    """The predict command passes its input: ``--input x.npy --out x.npy`` is refused."""
    source = tmp_path / "x.npy"
    source.write_bytes(b"the input")
    with pytest.raises(ConfigError, match=r"must not be a file this command reads, but .*x\.npy"):
        write_output(b"predictions", source, "predictions.csv", reads=(None, source))
    assert source.read_bytes() == b"the input"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]
    # a file that does not exist yet is the same file as its own name, by its resolved path
    with pytest.raises(ConfigError, match="is the same file as"):
        write_output(
            b"p", tmp_path / "sub" / ".." / "new.csv", "p.csv", reads=[tmp_path / "new.csv"]
        )
    assert not (tmp_path / "new.csv").exists()
    written = write_output(b"p", tmp_path / "p.csv", "p.csv", reads=[source], suffixes=(".csv",))
    assert written.read_bytes() == b"p"


def test_written_files_get_the_usual_permissions(tmp_path):
    """A file written atomically is as open() would make it, not private to its owner."""
    mask = os.umask(0)
    os.umask(mask)
    path = write_output("{}", tmp_path / "best.json", "best.json")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask != 0o600


@pytest.mark.parametrize(
    ("name", "content", "what"),
    [
        ("study.log", b'{"op_code": 0, "worker_id": "x"}\n', "a journal storage"),
        ("model.pt.meta.json", b'{"size": 1}', "the checksum of a checkpoint"),
        ("summary.json", b"{}", "a run's summary"),
    ],
)
def test_hpo_trainers_own_files_are_never_outputs(tmp_path, name, content, what):
    target = tmp_path / name
    target.write_bytes(content)
    with pytest.raises(ConfigError, match=f"hpo-trainer's own files.*is {what}"):
        write_output("x", target, "p.csv")
    assert target.read_bytes() == content


def test_nothing_is_written_into_a_run_folder(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "notes.csv").write_text("mine")
    with pytest.raises(ConfigError, match="a file of a run folder"):
        write_output("x", tmp_path / "notes.csv", "p.csv")
    assert (tmp_path / "notes.csv").read_text() == "mine"
