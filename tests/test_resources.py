"""One owner per resource, on every path: what a fit, a search and the budget lock open is
closed again when they end, and when they raise (writers, progress bars, threads, signal
handlers, the environment, database sessions); a storage that cannot keep the budget exact
and GPU ids that name no GPU are refused where they enter."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from tqdm.auto import tqdm

from hpo_trainer import Callback, ConfigError, NonFiniteLossError, StorageError, cli
from hpo_trainer.search.config import Budget, SearchConfig, StudyIdentity, make_config
from hpo_trainer.search.early import EarlyWorkers, scoped_environ
from hpo_trainer.search.locks import budget_lock
from hpo_trainer.search.processes import run_workers
from hpo_trainer.search.storage import open_storage
from hpo_trainer.train import checkpoint
from hpo_trainer.train.callbacks import CheckpointCallback, ProgressCallback, TensorBoardCallback
from hpo_trainer.train.devices import parse_devices
from hpo_trainer.train.loop import fit
from hpo_trainer.train.state import FitState

GOOD = {"optimizer.lr": 0.05, "model.hidden_size": 32}
DIGITS = str(Path(__file__).resolve().parents[1] / "studies" / "digits_mlp.py")


# -- a fit that raises closes what its callbacks opened -----------------------------------


def _batches():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=gen)
    y = torch.randint(0, 3, (32,), generator=gen)
    return [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]


def _failing_pass_batch(state, fail_in_epoch, error):
    """A forward pass that fails in epoch ``fail_in_epoch`` (1-based) at its second batch:
    raising ``error``, or with ``"nan"`` returning a NaN loss (the epoch then fails at its end).
    """
    model = state.model

    def pass_batch(batch):
        x, y = batch
        if state.epoch + 1 == fail_in_epoch and state.batch == 1 and model.training:
            if error == "nan":
                return {"loss": torch.tensor(float("nan"), requires_grad=True)}
            raise error("boom in pass_batch")
        preds = model(x)
        return {"loss": nn.functional.cross_entropy(preds, y), "preds": preds, "target": y}

    return pass_batch


def _state(epochs):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    return FitState(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=epochs
    )


def _threads():
    return {t.ident for t in threading.enumerate()}


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (RuntimeError, RuntimeError),
        (KeyboardInterrupt, KeyboardInterrupt),
        ("nan", NonFiniteLossError),
    ],
    ids=["user-error", "ctrl-c", "non-finite-loss"],
)
def test_a_fit_that_raises_closes_the_writer_the_bar_and_the_checkpoint_thread(
    tmp_path, monkeypatch, error, raised
):
    monkeypatch.setattr(tqdm, "monitor_interval", 0)  # tqdm's one thread for all bars
    state = _state(epochs=3)
    board = TensorBoardCallback(tmp_path / "tb", hparams={"lr": 0.1})
    saver = CheckpointCallback(tmp_path / "ckpt", background=True)
    callbacks = [board, ProgressCallback(enabled=True), saver]
    before = _threads()
    with pytest.raises(raised):
        fit(
            state,
            train_batches=_batches(),
            val_batches=_batches(),
            pass_batch=_failing_pass_batch(state, 2, error),
            callbacks=callbacks,
        )
    # no writer or checkpoint thread outlives the fit, nor an open progress bar
    assert _threads() <= before, [t.name for t in threading.enumerate()]
    assert [
        bar for bar in gc.get_objects() if issubclass(type(bar), tqdm) and not bar.disable
    ] == []
    # the completed epoch is in the event file (buffered until the writer is closed) ...
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("val/loss")] == [1]
    assert acc.Scalars("val/loss")[0].value == pytest.approx(state.history["val/loss"][0])
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    # ... and its checkpoint is whole; nothing of the failed epoch was saved
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.pt")) == ["epoch-0001.pt"]
    assert checkpoint.load(tmp_path / "ckpt" / "epoch-0001.pt")["epoch"] == 1


class _FailsToClose(Callback):
    def __init__(self, log):
        self.log = log

    def close(self, state):
        self.log.append("closed")
        raise OSError("disk full while closing")


def test_an_error_while_closing_does_not_hide_the_error_of_the_fit(tmp_path, caplog):
    state = _state(epochs=2)
    log: list[str] = []
    board = TensorBoardCallback(tmp_path / "tb")
    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError, match="boom"):
        fit(
            state,
            train_batches=_batches(),
            pass_batch=_failing_pass_batch(state, 1, RuntimeError),
            callbacks=[_FailsToClose(log), board],
        )
    assert log == ["closed"]
    assert "could not close after the fit failed: disk full" in caplog.text
    assert list((tmp_path / "tb").glob("events.*"))  # the callback after it was closed too
    assert board.close(state) is None  # closing again does nothing


def test_an_error_while_closing_a_finished_fit_is_raised_after_every_close(tmp_path):
    state = _state(epochs=1)
    before = _threads()
    with pytest.raises(OSError, match="disk full while closing"):
        fit(
            state,
            train_batches=_batches(),
            pass_batch=_failing_pass_batch(state, 99, RuntimeError),
            callbacks=[_FailsToClose([]), TensorBoardCallback(tmp_path / "tb")],
        )
    assert state.epoch == 1
    assert _threads() <= before


class _FailAtEpochEnd(Callback):
    def on_epoch_end(self, state):
        if state.epoch == 2:
            raise ValueError("a user callback failed")


def test_a_raising_train_leaves_no_writer_or_thread_open(make_trainer):
    tr = make_trainer()
    before = _threads()
    with pytest.raises(ValueError, match="a user callback failed"):
        tr.train(epochs=3, update_every=1, params=GOOD, callbacks=[_FailAtEpochEnd()])
    assert _threads() <= before, [t.name for t in threading.enumerate()]
    acc = EventAccumulator(str(tr.run_dir))
    acc.Reload()
    assert [e.step for e in acc.Scalars("val/loss")] == [1, 2]


# -- the environment and signal handlers of a search --------------------------------------


def test_scoped_environ_restores_only_the_keys_it_set(monkeypatch):
    monkeypatch.setenv("HPO_T_KEEP", "before")
    monkeypatch.delenv("HPO_T_NEW", raising=False)
    with pytest.raises(RuntimeError), scoped_environ({"HPO_T_KEEP": "in", "HPO_T_NEW": "in"}):
        assert (os.environ["HPO_T_KEEP"], os.environ["HPO_T_NEW"]) == ("in", "in")
        os.environ["HPO_T_OTHER"] = "set meanwhile"  # by someone else: it stays
        raise RuntimeError
    assert os.environ["HPO_T_KEEP"] == "before" and "HPO_T_NEW" not in os.environ
    assert os.environ.pop("HPO_T_OTHER") == "set meanwhile"


def test_a_failed_hand_over_restores_the_signal_handlers(tmp_path):
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    environ = dict(os.environ)
    cfg = SearchConfig(
        identity=StudyIdentity(study_name="s", storage=f"sqlite:///{tmp_path}/s.db"),
        budget=Budget(epochs=1, n_trials=1),
    )
    task = SimpleNamespace(worker_factory=lambda: None)
    with EarlyWorkers("time:sleep", (600,), {}, 1) as early:
        # The early worker died (killed, out of memory) before it was handed the search.
        for proc in early.procs:
            proc.kill()
            proc.join()
        with pytest.raises(BrokenPipeError):
            run_workers(task, cfg, early)  # type: ignore[arg-type]
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    assert dict(os.environ) == environ


def test_workers_started_before_the_parent_failed_are_stopped(make_trainer, monkeypatch):
    import hpo_trainer.search.processes as processes

    tr = make_trainer()
    cfg = make_config(tr, epochs=1, n_trials=2, n_workers=2)
    started: list = []

    def parent_fails(procs, received):  # as anything in the parent could, once they run
        started.extend(procs)
        raise RuntimeError("the parent failed")

    monkeypatch.setattr(processes, "_join", parent_fails)
    with pytest.raises(RuntimeError, match="the parent failed"):
        run_workers(tr, cfg)
    assert len(started) == 2 and not any(proc.is_alive() for proc in started)


def test_the_search_command_scopes_its_log_level_to_the_search(tmp_path, capfd):
    os.environ.pop("HPO_TRAINER_LOG_LEVEL", None)
    search_log = logging.getLogger("hpo_trainer.search")
    level = search_log.level
    argv = ["search", DIGITS, "--workers", "2", "--trials", "2", "--epochs", "1"]
    argv += ["--pruner", "none", "--runs-dir", str(tmp_path / "runs"), "--quiet"]
    assert cli.main(argv) == 0
    # the workers (spawned early, before torch was imported here) got the quiet level ...
    assert "[worker" not in capfd.readouterr().err
    # ... and this process is as it was
    assert "HPO_TRAINER_LOG_LEVEL" not in os.environ
    assert search_log.level == level


# -- the budget lock ----------------------------------------------------------------------


def test_a_failed_advisory_lock_closes_its_database_session(pg_url):
    from sqlalchemy import create_engine, event, text

    study = f"lock-{uuid.uuid4().hex[:8]}"
    storage = open_storage(pg_url)
    engine = storage.engine

    @event.listens_for(engine, "connect")
    def _short_lock_wait(dbapi_conn, _record):
        with dbapi_conn.cursor() as cur:
            cur.execute("SET lock_timeout = '200ms'")
        dbapi_conn.commit()  # or the pool's reset on return undoes it

    engine.dispose()
    lock = budget_lock(pg_url, storage, study)
    holder = create_engine(pg_url).connect()
    try:
        holder.execute(
            text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": f"hpo-trainer:{study}"}
        )
        with pytest.raises(Exception, match="lock timeout"):
            lock.__enter__()
        assert engine.pool.checkedout() == 0  # the connection did not leak ...
        holder.execute(
            text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": f"hpo-trainer:{study}"}
        )
        with lock:  # ... nor did its session keep the lock: the next worker gets it
            assert engine.pool.checkedout() == 1
        assert engine.pool.checkedout() == 0
    finally:
        holder.close()
        engine.dispose()


@pytest.mark.parametrize("url", ["mysql+pymysql://root@127.0.0.1:3306/test", "mariadb://u@h/db"])
def test_a_storage_without_a_budget_lock_is_refused_with_the_reason(make_trainer, url):
    with pytest.raises(ConfigError, match="cannot keep the trial budget exact.*PostgreSQL"):
        make_config(make_trainer(), epochs=1, n_trials=2, storage=url)
    with pytest.raises(StorageError, match="could both start the last trial"):
        budget_lock(url, None, "s")  # type: ignore[arg-type]


# -- GPU ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("devices", ["0,1", [0, 1], ["0", "1"], (0, "1"), " 0, 1", "00,1"])
def test_gpu_ids_are_taken_as_a_list_or_as_the_command_line_writes_them(devices):
    assert parse_devices(devices) == ["0", "1"]


def test_a_search_on_gpu_ids_gives_each_worker_its_slot(make_trainer):
    cfg = make_config(make_trainer(), epochs=1, n_trials=2, devices=0, workers_per_device=2)
    assert cfg.placement.n_workers == 2
    if not torch.cuda.is_available():  # where there are GPUs, ids name the visible ones
        assert cfg.placement.slots == ("0", "0")


@pytest.mark.parametrize(
    ("devices", "match"),
    [
        ("cuda:0", r"got 'cuda:0'; GPUs are named by their index: did you mean '0'\?"),
        (["cuda:0", "cuda:1"], r"did you mean '0,1'\?"),
        ("0,0", r"got '0,0'; name each GPU once.*workers_per_device"),
        ([], r"got \[\]"),
        (True, r"got True"),
        ([0.5], r"got \[0.5\]"),
        ("", r"got ''"),
    ],
)
def test_gpu_ids_that_name_no_gpu_are_refused(make_trainer, devices, match):
    with pytest.raises(ConfigError, match=rf"devices must be distinct GPU ids.*{match}"):
        make_config(make_trainer(), epochs=1, n_trials=2, devices=devices)
