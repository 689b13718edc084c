"""One fleet of lightweight workers for ``bench_budget_lock.py``: each starts trials on a shared
study through the product's trial-start path, suggests three parameters, sleeps instead of
training, and tells the trial, until the study's budget is reached.

The workers load only what the start path needs (Optuna, SQLAlchemy and the driver, and
``hpo_trainer.search.start``; no PyTorch), so 32 of them fit a small machine: as spawned
processes (``mode: processes``), or as threads of this process (``mode: threads``, each with
its own storage and study, as a process would have). Given another checkout of the package
(``tree``: e.g. ``git archive`` of the commit before the change), it measures that tree's
start path instead: ``worker._next_trial`` under the budget lock (its worker module loads
PyTorch, so use threads there).

Each start is measured from outside the product: the budget lock is wrapped to time how long
it is held and count the SQL statements (and rows of SELECTs) run while it is; a SQLAlchemy
event counter on the worker's engine counts those of the whole start.

Usage: ``python benchmarks/budget_lock_fleet.py SPEC.json``; the spec names ``url``,
``study``, ``n_trials``, ``workers``, ``mode``, ``trial_ms``, ``sampler`` (``random`` or
``tpe``), ``tree`` (or null) and ``out``, where the figures are written as JSON.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

#: The grace period the workers record on their trials (long: no trial should be judged dead).
GRACE = 600.0


class Meter:
    """Counts the SQL statements run on an engine, and the rows their SELECTs returned."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.statements = self.rows = 0
        if engine is not None:
            event.listen(engine, "before_cursor_execute", self._before)
            event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, *args: Any) -> None:
        self.statements += 1

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip()[:6].upper() == "SELECT" and cursor.rowcount > 0:
            self.rows += cursor.rowcount

    def snapshot(self) -> tuple[int, int]:
        """The counts so far."""
        return self.statements, self.rows

    def since(self, mark: tuple[int, int]) -> list[int]:
        """The statements and rows since ``mark``."""
        return [self.statements - mark[0], self.rows - mark[1]]


class TimedLock:
    """Wraps a budget lock: how long the last holder held it, and the storage work meanwhile."""

    def __init__(self, lock: Any, meter: Meter) -> None:
        self.lock, self.meter = lock, meter
        self.held, self.work = 0.0, [0, 0]

    def __enter__(self) -> None:
        self.lock.__enter__()
        self._mark, self._t0 = self.meter.snapshot(), time.perf_counter()

    def __exit__(self, *exc: object) -> Any:
        self.held = time.perf_counter() - self._t0
        self.work = self.meter.since(self._mark)
        return self.lock.__exit__(*exc)


def _new_path(spec: dict[str, Any], study: Any, storage: Any, meter: Meter) -> Any:
    """The start path of this tree: ``TrialStarter`` (what ``run_worker`` uses)."""
    from hpo_trainer.search.heartbeat import HeartbeatWatch
    from hpo_trainer.search.start import TrialStarter

    watch = HeartbeatWatch(storage, GRACE)
    starter = TrialStarter(
        study,
        storage,
        spec["url"],
        n_trials=spec["n_trials"],
        max_failures=10**9,
        watch=watch,
        grace_period=GRACE,
    )
    starter.lock = TimedLock(starter.lock, meter)
    return types.SimpleNamespace(lock=starter.lock, warm=starter.catch_up, next=starter.next)


def _old_path(spec: dict[str, Any], study: Any, storage: Any, meter: Meter) -> Any:
    """The start path of a tree without ``start.py``: ``_next_trial`` under the budget lock."""
    from hpo_trainer.search import worker
    from hpo_trainer.search.heartbeat import HeartbeatWatch
    from hpo_trainer.search.locks import budget_lock
    from hpo_trainer.search.storage import StorageFile

    n, f = spec["n_trials"], 10**9
    cfg = types.SimpleNamespace(  # what _next_trial reads, in the flat and the grouped layout
        n_trials=n,
        max_failures=f,
        grace_period=GRACE,
        budget=types.SimpleNamespace(n_trials=n, max_failures=f),
        durability=types.SimpleNamespace(grace_period=GRACE),
    )
    lock = TimedLock(budget_lock(spec["url"], storage, spec["study"]), meter)
    file, watch = StorageFile(spec["url"]), HeartbeatWatch(storage, GRACE)

    def warm() -> None:  # a fresh worker's first look: every trial, under the lock
        with lock:
            file.check()
            watch.read(study)

    def next_trial() -> Any:
        with lock:
            file.check()
            return worker._next_trial(cfg, study, storage, watch)

    return types.SimpleNamespace(lock=lock, warm=warm, next=next_trial)


def _sampler(name: str, seed: int) -> Any:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _trial(study: Any, trial: Any, trial_ms: float) -> None:
    """Suggest three parameters, sleep ``trial_ms`` instead of training, tell the value."""
    lr = trial.suggest_float("optimizer.lr", 1e-5, 1e-1, log=True)
    hidden = trial.suggest_int("model.hidden", 8, 256)
    momentum = trial.suggest_float("optimizer.momentum", 0.0, 0.99)
    time.sleep(trial_ms / 1e3)
    study.tell(trial, lr * 100 + 1 / hidden + momentum / 10)


def _loop(path: Any, study: Any, meter: Meter, trial_ms: float) -> list[dict[str, Any]]:
    """Start, run and tell trials until told to stop; one record per look at the study."""
    records = []
    while True:
        mark, wall, t0 = meter.snapshot(), time.time(), time.perf_counter()
        trial, stop, running = path.next()
        took = time.perf_counter() - t0
        kind = "stop" if stop else ("idle" if trial is None else "start")
        records.append(
            {"kind": kind, "at": wall, "s": took, "held": path.lock.held}
            | {"in_lock": path.lock.work, "start": meter.since(mark), "running": running}
        )
        if stop:
            return records
        if trial is None:
            time.sleep(0.05)  # the rest of the budget is running elsewhere
            continue
        _trial(study, trial, trial_ms)


def work(spec: dict[str, Any], index: int, barrier: Any, results: Any) -> None:
    """One worker: open the study, read it once, wait for the others, then start trials."""
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        from hpo_trainer.search.storage import open_storage

        storage = open_storage(spec["url"])
        sampler = _sampler(spec["sampler"], index)
        study = optuna.load_study(study_name=spec["study"], storage=storage, sampler=sampler)
        meter = Meter(getattr(storage, "engine", None))
        new = spec["engine"] == "new"
        path = (_new_path if new else _old_path)(spec, study, storage, meter)
        t0 = time.perf_counter()
        path.warm()
        first = time.perf_counter() - t0
        barrier.wait()
        cpu = time.process_time()  # this process's (a thread's fleet: all threads')
        records = _loop(path, study, meter, spec["trial_ms"])
        cpu = time.process_time() - cpu
        results.put({"worker": index, "first_read_s": first, "records": records, "cpu_s": cpu})
    except BaseException as exc:  # the parent reports it; a broken barrier frees the others
        barrier.abort()
        results.put({"worker": index, "error": f"{type(exc).__name__}: {exc}"})
        raise


def _engine() -> str:
    import importlib.util

    return "new" if importlib.util.find_spec("hpo_trainer.search.start") else "old"


def _run(spec: dict[str, Any]) -> dict[str, Any]:
    """Start the fleet, release it at once, collect every worker's records."""
    n = spec["workers"]
    if spec["mode"] == "threads":
        barrier, results = threading.Barrier(n + 1), queue.Queue()
        runners = [
            threading.Thread(target=work, args=(spec, i, barrier, results)) for i in range(n)
        ]
    else:
        ctx = multiprocessing.get_context("spawn")
        barrier, results = ctx.Barrier(n + 1), ctx.Queue()
        runners = [ctx.Process(target=work, args=(spec, i, barrier, results)) for i in range(n)]
    began = time.perf_counter()
    for r in runners:
        r.start()
    try:
        barrier.wait(timeout=1800)
    except threading.BrokenBarrierError:
        pass  # a worker failed: its error comes with the results
    go, ready, ticks = time.time(), time.perf_counter() - began, _cpu_ticks()
    got = [results.get(timeout=1800) for _ in range(n)]
    busy, total = (b - a for a, b in zip(ticks, _cpu_ticks()))
    for r in runners:
        r.join(timeout=60)
    return {"go": go, "ready_s": ready, "workers": got, "machine_busy": busy / max(total, 1)}


def _cpu_ticks() -> tuple[int, int]:
    """The machine's busy and total CPU ticks so far (``/proc/stat``; zeros elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    if spec.get("tree"):
        sys.path.insert(0, spec["tree"])
    spec["engine"] = _engine()
    out = _run(spec) | {"engine": spec["engine"], "spec": spec}
    Path(spec["out"]).write_text(json.dumps(out))
    errors = [w["error"] for w in out["workers"] if "error" in w]
    print("\n".join(errors) or f"{spec['engine']} fleet of {spec['workers']}: done")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
