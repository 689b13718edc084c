"""``Trainer``: the template's facade over the search space, the loop and the search.

It holds what a user configures (datasets and run options here; classes, primed arguments
and search spaces through the setters of :class:`~hpo_trainer.facade.recipe.Recipe`) and
hands the work to the layers below: :mod:`hpo_trainer.facade.checks` validates,
:mod:`hpo_trainer.codec.params` decodes parameters, :mod:`hpo_trainer.facade.build` builds
each run, :mod:`hpo_trainer.facade.runs` keeps run folders, :func:`hpo_trainer.train.loop.fit`
trains and :func:`hpo_trainer.search.engine.search` searches. What its calls build and find
is kept apart from the configuration, in :attr:`Trainer.state_`
(:class:`~hpo_trainer.facade.state.TrainerState`): the calls never change the configuration.
"""

from __future__ import annotations

import functools
import logging
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hpo_trainer.base.errors import ConfigError, raise_all
from hpo_trainer.codec.params import encode_params, resolve_params
from hpo_trainer.facade import checks, runfiles, runs
from hpo_trainer.facade.build import build_run, build_target
from hpo_trainer.facade.recipe import Recipe
from hpo_trainer.facade.state import StateViews, TrainerState
from hpo_trainer.search import facts
from hpo_trainer.search.engine import search
from hpo_trainer.train import checkpoint, data
from hpo_trainer.train.best import KeepBest
from hpo_trainer.train.callback import Callback
from hpo_trainer.train.devices import torch_threads
from hpo_trainer.train.loop import fit
from hpo_trainer.train.state import FitState, History, Run

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)


class Trainer(Recipe, StateViews):
    """Train a PyTorch model and search its hyperparameters (the template's API).

    Example:
        >>> tr = Trainer((x_train, y_train), (x_val, y_val), (x_test, y_test))  # doctest: +SKIP
        >>> tr.set_model(Net); tr.prime_model(input_size=64, hidden_size=32, target_length=10)
        >>> tr.set_criterion(nn.CrossEntropyLoss); tr.set_optimizer(SGD)
        >>> hyp = Hyperparameters(); hyp.set_range("lr", -5, -1); hyp.set_value("momentum", 0.9)
        >>> tr.set_hyperparameters(hyp)
        >>> study = tr.hyp_opt(epochs=5, iters=20)
        >>> history = tr.train(epochs=30, save_every=5)

    Args:
        train_data: The training set: a ``Dataset`` whose items are dicts or tuples, a
            ``TensorDataset``, or a tuple or dict of tensors / numpy arrays.
        val_data: The validation set (same forms); searches are judged on it.
        test_data: An optional test set, evaluated every epoch of :meth:`train`.
        batch_size: Examples per batch, unless searched through the ``loader`` space.
        device: ``"auto"`` (CUDA, then MPS, then CPU), or a device name.
        seed: Seeds every generator, so that a CPU run repeats exactly.
        amp: Mixed precision on CUDA: ``True`` (bfloat16 where supported), ``"bf16"``,
            ``"fp16"``.
        grad_clip: Clip the gradient norm to this value.
        runs_dir: Where runs, checkpoints, TensorBoard files and studies go.
        name: The name of this experiment (runs and the default study are named after it).
        quiet: No progress bar, even on a terminal.
        num_workers: ``DataLoader`` worker processes for general (not in-memory) datasets.

    Attributes:
        state_: What calls built and found (:class:`~hpo_trainer.facade.state.TrainerState`):
            the last run, the last search's best trial, the last run folder and summary, read
            through ``last_run``, ``model``, ``history``, ``run_dir``, ``summary``, ... Every
            other attribute is configuration, which no call changes.
        factory: How a worker process rebuilds this trainer (set by a study file's loader);
            ``None`` sends the trainer itself, pickled.

    Raises:
        DataError: If a dataset cannot be used.
        ConfigError: Listing every other argument that is not valid.

    """

    def __init__(
        self,
        train_data: Any,
        val_data: Any = None,
        test_data: Any = None,
        *,
        batch_size: int = 64,
        device: str | torch.device = "auto",
        seed: int | None = None,
        amp: bool | str = False,
        grad_clip: float | None = None,
        runs_dir: str | Path = "runs",
        name: str = "experiment",
        quiet: bool = False,
        num_workers: int = 0,
    ) -> None:
        self.device = checks.check_trainer_args(
            (train_data, val_data, test_data),
            device=device,
            batch_size=batch_size,
            grad_clip=grad_clip,
            name=name,
            runs_dir=runs_dir,
            amp=amp,
            seed=seed,
            num_workers=num_workers,
        )
        self.train_data, self.val_data, self.test_data = (
            data.tensors_or_dataset(ds) for ds in (train_data, val_data, test_data)
        )
        self.batch_size, self.num_workers = batch_size, num_workers
        self.seed, self.amp, self.grad_clip = seed, amp, grad_clip
        self.runs_dir, self.name, self.quiet = Path(runs_dir), name, quiet
        super().__init__()
        self.factory: Callable[[], Trainer] | None = None
        self.state_ = TrainerState()

    # -- the forward pass ----------------------------------------------------------------

    def pass_batch(self, batch: Any) -> dict[str, Any]:
        """Run one batch through the model; override for other batch layouts or outputs.

        Before any run, it builds one first with :meth:`initialize`.

        Args:
            batch: A dict with ``'x'`` and ``'y'`` or a tuple ``(x, y)``.

        Returns:
            ``{'loss': loss, 'preds': preds, 'target': y}``; further scalar entries are
            averaged per epoch into the history.

        Raises:
            ConfigError: If no run was built and none can be (see :meth:`initialize`).

        """
        if self.state_.last_run is None:
            self.initialize()
        x, y = data.split_xy(batch)
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        preds = self.model(x)  # type: ignore[misc]
        return {"loss": self.criterion(preds, y), "preds": preds, "target": y}

    def build_model(
        self, values: Mapping[str, Mapping[str, Any]], *, epochs: int | None = None
    ) -> nn.Module:
        """Build the model a run with ``values`` trains and ships (preprocessing included).

        Args:
            values: The values for each target (see :meth:`resolve_params`).
            epochs: The run's planned epochs (for model arguments bound to ``EPOCHS``).

        Raises:
            ConfigError: If building the model fails.

        """
        model = build_target(
            "model",
            self._classes["model"],
            self._primed["model"],
            values.get("model", {}),
            epochs=epochs,
            explain=True,
        )
        return self._shipped(model)

    # -- parameters and building -----------------------------------------------------------

    def resolve_params(self, params: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Return the values for each target for a run, from ``params`` or the spaces.

        Args:
            params: Searched values, as stored: ``{target: {name: value}}`` or Optuna's flat
                ``{"target.name": value}``. ``None`` uses the best values of the last
                search, or the fixed values if nothing is searched.

        Raises:
            ConfigError: If values are missing or do not fit the spaces.

        """
        return resolve_params(self._spaces, params, best=self.state_.best)

    def encode_params(self, values: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Return the searched part of ``values`` as stored: ``{target: {name: label}}``."""
        return encode_params(self._spaces, values)

    def build(
        self,
        values: Mapping[str, Mapping[str, Any]],
        *,
        epochs: int,
        seed: int | None = None,
        with_test: bool = True,
        explain: bool = False,
    ) -> Run:
        """Build a fresh model, optimizer, scheduler and data batches for one run.

        Args:
            values: The values for each target (see :meth:`resolve_params`).
            epochs: The number of epochs the run will train.
            seed: Seeds the model's initialisation and the shuffles.
            with_test: Evaluate the test set every epoch.
            explain: Turn an exception raised by a user class into a :class:`ConfigError`
                naming the target and the class (a trial keeps the original exception).

        Returns:
            The run (see :func:`hpo_trainer.facade.build.build_run`), also kept as
            :attr:`last_run` (in :attr:`state_`).

        Raises:
            ConfigError: If ``explain`` and building a target failed.

        """
        run = build_run(
            values,
            classes=self._classes,
            primed=self._primed,
            with_scheduler=self.builds_scheduler,
            datasets=(self.train_data, self.val_data, self.test_data),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            device=self.device,
            amp=self.amp,
            epochs=epochs,
            seed=seed,
            with_test=with_test,
            params=self.encode_params(values),
            explain=explain,
        )
        if self._preprocess is not None:
            run.state.model = self._shipped(run.state.model)
        self.state_.last_run = run
        return run

    def initialize(self, params: Mapping[str, Any] | None = None, *, epochs: int = 1) -> Run:
        """Build a run without training it: what :meth:`pass_batch` and ``model`` then use.

        Args:
            params: The searched values (see :meth:`resolve_params`); ``None`` uses the last
                search's best, or the fixed values if nothing is searched.
            epochs: The epochs the run is built for (for ``EPOCHS`` expressions).

        Returns:
            The run, also kept as :attr:`last_run`.

        Raises:
            ConfigError: If values are still searched and none are given, or building fails.

        """
        self.check()
        values = self.resolve_params(params)
        return self.build(values, epochs=epochs, seed=self.seed, explain=True)

    def fit(self, run: Run, callbacks: Sequence[Callback]) -> FitState:
        """Train ``run`` with :func:`hpo_trainer.train.loop.fit` and :meth:`pass_batch`."""
        self.state_.last_run = run  # pass_batch reads the run's model and criterion from it
        return fit(
            run.state,
            train_batches=run.train_batches,
            val_batches=run.val_batches,
            test_batches=run.test_batches,
            pass_batch=self.pass_batch,
            callbacks=callbacks,
            amp=run.amp,
            grad_clip=self.grad_clip,
            metric_fns=self._metric_fns,
        )

    # -- training ------------------------------------------------------------------------

    def train(
        self,
        epochs: int,
        update_every: int = 1,
        save_every: int | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        resume: bool | str | Path = False,
        callbacks: Sequence[Callback] = (),
        run_name: str | None = None,
        keep: str = "best",
        monitor: tuple[str, str] | None = None,
        seed: int | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> History:
        """Train one model for ``epochs`` epochs in a new run folder under ``runs_dir``.

        The run folder ends with the model's weights (``model.pt``), an exported program
        where the model can be captured (``model.pt2``) and ``summary.json``, so that
        :func:`hpo_trainer.load_run` can use it later.

        Args:
            epochs: How many epochs to train.
            update_every: Write TensorBoard scalars every this many epochs.
            save_every: Save a checkpoint every this many epochs (and after the last);
                ``None`` saves only after the last.
            params: The searched values to use (see :meth:`resolve_params`); ``None``
                after :meth:`hyp_opt` uses its best trial's.
            resume: Continue a run from its newest good checkpoint (callbacks' states
                included): a run folder, or ``True`` for the newest run of this name.
            callbacks: More callbacks, called after the stock ones (except the checkpoint,
                which runs last so that it saves every callback's state).
            run_name: The run folder's name prefix (default: the trainer's name).
            keep: ``"best"``: with validation data, the model ends with the weights of its
                best epoch by ``monitor`` (what a search trial's value measures);
                ``"last"``: the last epoch's.
            monitor: The metric and direction that choose the best epoch (default: the
                last search's, else ``("val/loss", "minimize")``).
            seed: Seeds the run (default: the best trial's seed when its params are used,
                else the trainer's ``seed``).
            provenance: Where the params came from (study, trial, value, ...), recorded in
                ``summary.json``.

        Returns:
            The run's history (also :attr:`history`), every epoch included.

        Raises:
            ConfigError: If the configuration or an argument is not valid.
            Interrupted: If SIGINT or SIGTERM stopped the run (it can be resumed).

        """
        raise_all(
            checks.train_problems(
                epochs=epochs,
                update_every=update_every,
                save_every=save_every,
                resume=resume,
                run_name=run_name,
                callbacks=callbacks,
            )
            + checks.keep_problems(keep=keep, monitor=monitor, seed=seed)
        )
        self.check()
        run_dir, ckpt, values = self._start_values(params, resume)
        seed, provenance, monitor, threads = runs.repeat_trial(
            self.state_.best_trial if params is None else None,
            seed=self.seed if seed is None else seed,
            seed_given=seed is not None,
            provenance=provenance,
            monitor=monitor,
            last_search=self.state_.best_trial,
        )
        if keep == "best" and self.val_data is not None and monitor[0] not in self.metric_names():
            raise ConfigError(
                f"the best epoch is chosen by {monitor[0]!r}, which the run does not record; "
                f"choose one of {', '.join(self.metric_names())} (monitor=(name, direction)), "
                "or keep='last'"
            )
        # Build first: a class that fails to build must not leave an empty run folder.
        run = self.build(values, epochs=epochs, seed=seed, explain=True)
        folder = run_dir or runs.new_run_dir(self.runs_dir, run_name or self.name)
        self.state_.run_dir, self.state_.summary = folder, None
        if ckpt is not None:
            checkpoint.restore(run.state, ckpt)
        keeper = (
            KeepBest(monitor[0], mode=monitor[1])
            if keep == "best" and self.val_data is not None
            else None
        )
        stock = runs.stock_callbacks(
            folder,
            epochs=epochs,
            save_every=save_every,
            update_every=update_every,
            hparams={f"{t}.{k}": v for t, vs in values.items() for k, v in vs.items()},
            quiet=self.quiet,
        )
        extra = [keeper] if keeper is not None else []
        started = time.perf_counter()
        with torch_threads(threads):
            runs.fit_until_signal(
                lambda: self.fit(run, [*stock, *extra, *callbacks]), run.state, folder
            )
        kept = keeper.restore(run.state.model) if keeper is not None else None
        logger.info(
            "trained %d epochs in %.1fs into %s (kept epoch %d)",
            run.state.epoch,
            time.perf_counter() - started,
            folder,
            kept or run.state.epoch,
        )
        self.state_.summary = runfiles.write_run(
            self,
            run,
            folder,
            kept_epoch=kept or run.state.epoch,
            monitor=monitor if kept else None,
            recipe={"epochs": epochs, "seed": seed, "threads": threads or torch.get_num_threads()},
            provenance=provenance,
        )
        return run.state.history

    def _start_values(
        self, params: Mapping[str, Any] | None, resume: bool | str | Path
    ) -> tuple[Path | None, dict[str, Any] | None, dict[str, dict[str, Any]]]:
        """Return the run folder and checkpoint to resume (if any) and the run's values.

        Raises:
            ConfigError: If ``params`` are not the resumed run's own.

        """
        run_dir = runs.resume_dir(self.runs_dir, self.name, resume) if resume else None
        ckpt = runs.latest_checkpoint(run_dir) if run_dir is not None else None
        if ckpt is None:
            return None, None, self.resolve_params(params)
        if params is not None and self.encode_params(self.resolve_params(params)) != (
            ckpt["params"] or {}
        ):
            raise ConfigError(
                f"the run {str(run_dir)!r} was trained with other params ({ckpt['params']}) "
                "than the ones given; resume it with its own, or train the given ones in a "
                "new run"
            )
        return run_dir, ckpt, self.resolve_params(ckpt["params"]) if self._spaces else {}

    # -- searching -----------------------------------------------------------------------

    def hyp_opt(self, epochs: int, iters: int, **options: Any) -> optuna.Study:
        """Search the hyperparameters: ``iters`` trials of up to ``epochs`` epochs each.

        The study is kept in a database (a SQLite file under ``runs_dir`` by default), so
        several processes can share it and an interrupted search resumes. Afterwards,
        :meth:`train` without ``params`` uses the best values found.

        Args:
            epochs: Epochs per trial.
            iters: Finished trials the study should have in total, across all workers.
            **options: See :func:`hpo_trainer.search.config.make_config` (``study_name``,
                ``storage``, ``sampler``, ``pruner``, ``n_workers``, ``devices``,
                ``timeout``, ``seed``, ``direction``, ``metric``, ``objectives``,
                ``prune_on``, ...). With ``objectives=["val/loss:min", "model/params:min"]``
                the study is multi-objective; :meth:`train` then uses the Pareto front's
                best trial by the first objective.

        Returns:
            The ``optuna.Study``.

        Raises:
            ConfigError: If an option is invalid, or the search stopped short of its budget
                without a single completed trial.

        """
        outcome = search(self, epochs=epochs, n_trials=iters, **options)
        best = facts.best(outcome.study)
        if outcome.problem is not None:
            if best is None:
                raise ConfigError(outcome.problem)
            logger.warning("%s", outcome.problem)
        if best is None:
            raise ConfigError(
                f"study {outcome.study.study_name!r} has no completed trial yet; run the "
                "search first"
            )
        self.state_.best = self.resolve_params(best.params)
        self.state_.best_trial = facts.recipe(outcome.study, best)
        return outcome.study

    def metric_names(self) -> list[str]:
        """Return the metrics a run records every epoch (accuracy for classification)."""
        names = ["train/loss", "train/acc"]
        if self.val_data is not None:
            names += ["val/loss", "val/acc"] + [f"val/{m}" for m in self._metric_fns]
        return names

    def worker_factory(self) -> Callable[[], Trainer]:
        """Return how a worker process rebuilds this trainer: its study file, or a pickle.

        Raises:
            ConfigError: If the trainer cannot be pickled and came from no study file.

        """
        if self.factory is not None:
            return self.factory
        try:
            return functools.partial(pickle.loads, pickle.dumps(self))
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise ConfigError(
                f"n_workers > 1 needs a trainer that can be sent to worker processes, but it "
                f"cannot be pickled ({exc}); define models, datasets and metrics at module "
                "level (not in a function or lambda), or use a study file with "
                "`hpo-trainer search`"
            ) from exc

    def __getstate__(self) -> dict[str, Any]:
        # Workers get the configuration, not the last run's model and optimizer.
        return {**self.__dict__, "state_": self.state_.without_run()}
