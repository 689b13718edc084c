"""Run folders of :meth:`~hpo_trainer.Trainer.train`: new ones, resume lookup, the stock
callbacks that write into them, and a clean stop on SIGINT / SIGTERM.

Each run gets a new folder ``<runs_dir>/<name>-<timestamp>`` (earlier runs are never
touched) holding ``checkpoints/epoch-NNNN.pt`` and the TensorBoard events.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hpo_trainer.base.errors import ConfigError, Interrupted
from hpo_trainer.train import checkpoint
from hpo_trainer.train.callback import Callback
from hpo_trainer.train.callbacks import (
    CheckpointCallback,
    ProgressCallback,
    TensorBoardCallback,
)
from hpo_trainer.train.interrupt import stop_on_signals
from hpo_trainer.train.state import FitState

logger = logging.getLogger(__name__)


def new_run_dir(runs_dir: Path, name: str) -> Path:
    """Create and return a new run folder; earlier runs are never touched.

    Raises:
        ConfigError: If no new folder could be created.

    """
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = runs_dir / (f"{name}-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"could not create a new run folder in {runs_dir}")


def resume_dir(runs_dir: Path, name: str, resume: bool | str | Path) -> Path:
    """Return the run folder to resume: ``resume`` itself, or for ``True`` the newest run.

    Raises:
        ConfigError: If there is no such run folder with checkpoints.

    """
    if resume is True:
        runs = sorted(
            (p for p in runs_dir.glob(f"{name}-*") if (p / "checkpoints").is_dir()),
            key=lambda p: p.stat().st_mtime,
        )
        if not runs:
            raise ConfigError(
                f"resume=True, but {runs_dir} holds no run named {name}-* with "
                "checkpoints; pass the run folder instead"
            )
        return runs[-1]
    path = Path(resume)
    if not (path / "checkpoints").is_dir():
        raise ConfigError(f"resume={str(resume)!r} is not a run folder with checkpoints/")
    return path


def latest_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Load the newest good checkpoint of ``run_dir``, skipping damaged ones.

    Raises:
        ConfigError: If the run has no checkpoint that can be loaded.

    """
    ckpt = checkpoint.load_latest(sorted((run_dir / "checkpoints").glob("epoch-*.pt")))
    if ckpt is None:
        raise ConfigError(f"no good checkpoint to resume from in {run_dir / 'checkpoints'}")
    logger.info("resuming %s from epoch %d (%s)", run_dir, ckpt["epoch"], ckpt["path"])
    return ckpt


def repeat_trial(
    best: Mapping[str, Any] | None,
    *,
    seed: int | None,
    seed_given: bool,
    provenance: Mapping[str, Any] | None,
    monitor: tuple[str, str] | None,
    last_search: Mapping[str, Any] | None,
) -> tuple[int | None, Mapping[str, Any] | None, tuple[str, str], int | None]:
    """Return a run's seed, provenance, monitor and threads.

    A run on the last search's best params (``best``) repeats what made that trial's value
    unless told otherwise: its seed, its thread count (workers run one thread each; all of
    a shared machine's threads would thrash and change the float sums) and where it came
    from. The best epoch is chosen by the last search's metric, else ``val/loss``.
    """
    if best is not None and not seed_given and best.get("seed") is not None:
        seed = best["seed"]
    if best is not None and provenance is None:
        provenance = best
    if monitor is None:
        monitor = ("val/loss", "minimize")
        if last_search is not None and last_search.get("metric"):
            monitor = (last_search["metric"], last_search["direction"])
    threads = best.get("threads") if best is not None else None
    return seed, provenance, monitor, threads


def stock_callbacks(
    run_dir: Path,
    *,
    epochs: int,
    save_every: int | None,
    update_every: int,
    hparams: Mapping[str, Any],
    quiet: bool,
) -> list[Callback]:
    """Return a run's own callbacks: checkpoints, TensorBoard and (on a terminal) progress."""
    stock: list[Callback] = [
        CheckpointCallback(run_dir / "checkpoints", every=save_every or epochs),
        TensorBoardCallback(run_dir, every=update_every, hparams=hparams),
    ]
    progress = ProgressCallback(enabled=False if quiet else None)
    if progress.enabled:  # its per-batch hook is only worth calling when it shows
        stock.append(progress)
    return stock


def fit_until_signal(fit: Callable[[], Any], state: FitState, run_dir: Path) -> None:
    """Call ``fit``; SIGINT or SIGTERM stops it at the next batch boundary.

    Args:
        fit: Trains the run whose state is ``state``.
        state: The run's state, flagged as interrupted by a signal.
        run_dir: The run folder, named in the error so the user can resume.

    Raises:
        Interrupted: If a signal stopped the run, saying how to resume it.

    """
    with stop_on_signals() as flag:
        flag.state = state
        try:
            fit()
        finally:
            flag.state = None
    if state.interrupted and flag.signum is not None:
        raise Interrupted(
            flag.signum,
            f"stopped by {signal.Signals(flag.signum).name} after epoch {state.epoch}; "
            f"continue with train(..., resume={str(run_dir)!r}) or "
            f"`hpo-trainer train ... --resume {run_dir}`",
        )
