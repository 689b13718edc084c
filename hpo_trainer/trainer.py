"""``Trainer``: the template's facade over the search space, the loop and the search.

It holds what a user configures (datasets, classes, primed arguments, search spaces) and
builds a fresh model, optimizer and scheduler for each run from one set of parameters.
Training is :func:`hpo_trainer.loop.fit`; searching is :func:`hpo_trainer.search.search`.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hpo_trainer.checks import (
    callback_problems,
    check_class,
    folder_name_problem,
    group_params,
    is_positive_number,
    keyword_names,
    label_of,
)
from hpo_trainer.errors import (
    ConfigError,
    DataError,
    HpoTrainerError,
    Interrupted,
    did_you_mean,
    raise_all,
)
from hpo_trainer.search import facts
from hpo_trainer.search.engine import search
from hpo_trainer.space import CLASS, TARGETS, Hyperparameters
from hpo_trainer.space.dimensions import CategoricalDim
from hpo_trainer.train import checkpoint, data
from hpo_trainer.train.callbacks import (
    Callback,
    CheckpointCallback,
    ProgressCallback,
    TensorBoardCallback,
)
from hpo_trainer.train.devices import amp_mode, resolve_device, seed_everything
from hpo_trainer.train.interrupt import stop_on_signals
from hpo_trainer.train.loop import MetricFn, fit
from hpo_trainer.train.state import FitState, History, Run

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

#: Arguments a target receives from the trainer, never from the user.
_SUPPLIED = {"optimizer": 1, "scheduler": 1, "model": 0, "criterion": 0}
_LOADER_NAMES = ("batch_size",)


class Trainer:
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
        problems = []
        for split, ds in (("train", train_data), ("val", val_data), ("test", test_data)):
            if ds is None and split != "train":
                continue
            try:
                data.check_dataset(ds, split)
            except HpoTrainerError as exc:
                problems.append(str(exc))
        raise_all(problems, DataError)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            problems.append(f"batch_size must be a positive integer, got {batch_size!r}")
        if grad_clip is not None and not is_positive_number(grad_clip):
            problems.append(f"grad_clip must be a positive number or None, got {grad_clip!r}")
        problems.extend(p for p in [folder_name_problem("name", name)] if p)
        if not isinstance(runs_dir, (str, os.PathLike)) or not str(runs_dir).strip():
            problems.append(
                f"runs_dir must be a folder path (a str or Path), got {runs_dir!r}; the "
                "default is 'runs'"
            )
        if not (amp is None or isinstance(amp, bool) or amp in ("bf16", "fp16")):
            problems.append(f"amp must be True, False, 'bf16' or 'fp16', got {amp!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            problems.append(f"seed must be an integer or None, got {seed!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            problems.append(
                f"num_workers must be an integer >= 0 (0 loads batches in this process), "
                f"got {num_workers!r}"
            )
        try:
            resolved = resolve_device(device)
        except ConfigError as exc:
            problems.append(str(exc))
        raise_all(problems)
        # In-memory data is converted to tensors once here, not again in every trial.
        self.train_data, self.val_data, self.test_data = (
            _as_tensors(ds) for ds in (train_data, val_data, test_data)
        )
        self.batch_size = batch_size
        self.device = resolved
        self.seed = seed
        self.amp = amp
        self.grad_clip = grad_clip
        self.runs_dir = Path(runs_dir)
        self.name = name
        self.quiet = quiet
        self.num_workers = num_workers
        self._classes: dict[str, Any] = dict.fromkeys(TARGETS)
        self._primed: dict[str, tuple[tuple, dict]] = {t: ((), {}) for t in TARGETS}
        self._spaces: dict[str, Hyperparameters] = {}
        self._metric_fns: dict[str, MetricFn] = {}
        self._best: dict[str, dict[str, Any]] | None = None
        self.history: History = History()
        self.model: nn.Module | None = None
        self.criterion: Any = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.run_dir: Path | None = None
        #: How a worker process rebuilds this trainer (set by a study file); ``None``
        #: sends the trainer itself, pickled.
        self.factory: Callable[[], Trainer] | None = None

    # -- the template's setters ----------------------------------------------------------

    def set_model(self, model_class: type[nn.Module] | None) -> None:
        """Set the model class, built fresh for every run.

        Raises:
            ConfigError: If ``model_class`` is not a class (or a function building a model).

        """
        self._classes["model"] = check_class("model", model_class)

    def set_criterion(self, criterion: Any) -> None:
        """Set the loss: a class such as ``nn.CrossEntropyLoss``, an instance, or a function.

        Raises:
            ConfigError: If ``criterion`` is not callable.

        """
        self._classes["criterion"] = check_class("criterion", criterion)

    def set_optimizer(self, optimizer_class: type[torch.optim.Optimizer] | None) -> None:
        """Set the optimizer class (it may instead be searched with ``choose_class``).

        Raises:
            ConfigError: If ``optimizer_class`` is not a class (e.g. a name or an instance).

        """
        self._classes["optimizer"] = check_class("optimizer", optimizer_class)

    def set_scheduler(self, scheduler_class: Any) -> None:
        """Set the learning-rate scheduler class (stepped once per epoch).

        Raises:
            ConfigError: If ``scheduler_class`` is not a class (e.g. a name or an instance).

        """
        self._classes["scheduler"] = check_class("scheduler", scheduler_class)

    def prime_model(self, *args: Any, **kwargs: Any) -> None:
        """Fix arguments passed to the model class in every run."""
        self._primed["model"] = (args, kwargs)

    def prime_optimizer(self, *args: Any, **kwargs: Any) -> None:
        """Fix arguments passed to the optimizer after the model's parameters."""
        self._primed["optimizer"] = (args, kwargs)

    def prime_scheduler(self, *args: Any, **kwargs: Any) -> None:
        """Fix arguments passed to the scheduler after the optimizer, e.g. ``(5, gamma=0.1)``."""
        self._primed["scheduler"] = (args, kwargs)

    def prime_criterion(self, *args: Any, **kwargs: Any) -> None:
        """Fix arguments passed to the criterion class."""
        self._primed["criterion"] = (args, kwargs)

    def set_hyperparameters(self, hyp: Hyperparameters) -> None:
        """Set the search space of the optimizer."""
        self.set_space("optimizer", hyp)

    def set_arch_hyperparameters(self, hyp: Hyperparameters) -> None:
        """Set the search space of the model (its constructor's keyword arguments)."""
        self.set_space("model", hyp)

    def set_scheduler_hyperparameters(self, hyp: Hyperparameters) -> None:
        """Set the search space of the scheduler."""
        self.set_space("scheduler", hyp)

    def set_loader_hyperparameters(self, hyp: Hyperparameters) -> None:
        """Set the search space of the data loader (``batch_size``)."""
        self.set_space("loader", hyp)

    def set_space(self, target: str, hyp: Hyperparameters) -> None:
        """Set the search space of ``target`` (model, optimizer, scheduler, loader, criterion).

        Raises:
            ConfigError: If ``target`` or ``hyp`` is not valid.

        """
        if target not in TARGETS:
            raise ConfigError(
                f"target must be one of {', '.join(TARGETS)}, got {target!r}."
                + did_you_mean(str(target), TARGETS)
            )
        if not isinstance(hyp, Hyperparameters):
            raise ConfigError(f"expected a Hyperparameters object, got {type(hyp).__name__}")
        hyp.target = target
        self._spaces[target] = hyp

    def add_metric(self, name: str, fn: MetricFn) -> None:
        """Track ``fn(preds, target)``, averaged over examples, as ``val/<name>``.

        Raises:
            ConfigError: If ``name`` is not a non-empty string or ``fn`` is not callable.

        """
        if not isinstance(name, str) or not name.strip() or "/" in name:
            raise ConfigError(
                f"a metric name must be a non-empty string without '/' (it is logged as "
                f"val/<name>), got {name!r}"
            )
        if not callable(fn):
            raise ConfigError(
                f"metric {name!r} must be a callable fn(preds, target) returning a number, "
                f"got {type(fn).__name__} {fn!r}"
            )
        self._metric_fns[name] = fn

    @property
    def spaces(self) -> dict[str, Hyperparameters]:
        """The search spaces, by target."""
        return dict(self._spaces)

    def get_model(self) -> nn.Module:
        """Return the model of the last run.

        Raises:
            ConfigError: If nothing has been trained yet.

        """
        if self.model is None:
            raise ConfigError("no model has been trained yet; call train() first")
        return self.model

    # -- the forward pass ----------------------------------------------------------------

    def pass_batch(self, batch: Any) -> dict[str, Any]:
        """Run one batch through the model; override for other batch layouts or outputs.

        Args:
            batch: A dict with ``'x'`` and ``'y'`` or a tuple ``(x, y)``.

        Returns:
            ``{'loss': loss, 'preds': preds, 'target': y}``; further scalar entries are
            averaged per epoch into the history.

        """
        x, y = data.split_xy(batch)
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        preds = self.model(x)  # type: ignore[misc]
        return {"loss": self.criterion(preds, y), "preds": preds, "target": y}

    # -- checking and building -----------------------------------------------------------

    def check(self) -> None:
        """Check the whole configuration before any training starts.

        Raises:
            ConfigError: Listing every problem found.

        """
        problems: list[str] = []
        for target in ("model", "optimizer", "criterion"):
            if self._classes[target] is None and not self._space_chooses_class(target):
                problems.append(
                    f"no {target} is set; call set_{target}(...) before training or searching"
                )
        for target, hyp in self._spaces.items():
            try:
                hyp.validate()
            except HpoTrainerError as exc:
                problems.append(f"{target} space: {exc}")
                continue
            problems.extend(self._check_names(target, hyp))
        problems.extend(self._check_primed())
        raise_all(problems)

    def _check_primed(self) -> list[str]:
        """Primed keywords that a class set (or searched) for their target does not take."""
        problems = []
        for target in ("model", "optimizer", "scheduler", "criterion"):
            args, primed = self._primed[target]
            hyp = self._spaces.get(target)
            if hyp is not None:
                classes = self._candidate_classes(target, hyp)
            else:
                classes = [self._classes[target]] if self._classes[target] is not None else []
            for cls in classes:
                if not isinstance(cls, type) and target == "criterion":
                    continue  # an instance or function is used as it is, unprimed
                accepted = keyword_names(cls, _SUPPLIED.get(target, 0) + len(args))
                for name in primed:
                    if accepted is not None and name not in accepted:
                        problems.append(
                            f"prime_{target}({name}=...): {name!r} is not an argument of "
                            f"{target} {label_of(cls)} (it takes "
                            f"{', '.join(accepted) or 'none'})." + did_you_mean(name, accepted)
                        )
        return problems

    def _space_chooses_class(self, target: str) -> bool:
        hyp = self._spaces.get(target)
        return hyp is not None and (CLASS in hyp.searched or CLASS in hyp.fixed)

    def _candidate_classes(self, target: str, hyp: Hyperparameters) -> list[Any]:
        if CLASS in hyp.searched:
            dim = hyp.searched[CLASS]
            return list(dim.choices) if isinstance(dim, CategoricalDim) else []
        if CLASS in hyp.fixed:
            return [hyp.fixed[CLASS]]
        return [self._classes[target]] if self._classes[target] is not None else []

    def _check_names(self, target: str, hyp: Hyperparameters) -> list[str]:
        problems = []
        args, primed = self._primed[target]
        for name in hyp.names:
            if name == CLASS:
                continue
            if name in primed:
                problems.append(
                    f"{target} argument {name!r} is both in the search space and given to "
                    f"prime_{target}({name}=...); use one: set_value({name!r}, ...) or the "
                    "prime keyword"
                )
            if target == "loader":
                if name not in _LOADER_NAMES:
                    problems.append(
                        f"the loader space only takes {', '.join(_LOADER_NAMES)}, got "
                        f"{name!r}." + did_you_mean(name, _LOADER_NAMES)
                    )
                continue
            when = hyp.conditions(name).get(CLASS)
            for cls in self._candidate_classes(target, hyp):
                if when is not None and label_of(cls) not in when:
                    continue
                accepted = keyword_names(cls, _SUPPLIED.get(target, 0) + len(args))
                if accepted is not None and name not in accepted:
                    problems.append(
                        f"{name!r} is not an argument of {target} {label_of(cls)} (it takes "
                        f"{', '.join(accepted) or 'none'})." + did_you_mean(name, accepted)
                    )
        return problems

    def resolve_params(self, params: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Return the values for each target for a run, from ``params`` or the spaces.

        Args:
            params: Searched values, as stored: ``{target: {name: value}}`` or Optuna's flat
                ``{"target.name": value}``. ``None`` uses the best values of the last
                search, or the fixed values if nothing is searched.

        Raises:
            ConfigError: If values are missing or do not fit the spaces.

        """
        if params is None and self._best is not None:
            return {t: dict(v) for t, v in self._best.items()}
        if params is None:
            searched = [f"{t}.{n}" for t, h in self._spaces.items() for n in h.searched]
            if searched:
                raise ConfigError(
                    f"{', '.join(searched)} {'is' if len(searched) == 1 else 'are'} still "
                    "searched, so a training run does not know which values to use; run "
                    "hyp_opt() first, pass params={...} (e.g. an exported best.json), or fix "
                    "them with set_value()"
                )
            return {t: h.sample(seed=0) for t, h in self._spaces.items()}
        if not isinstance(params, Mapping):
            hint = (
                f"; to use a params file, pass params=export.read({str(params)!r})['params']"
                if isinstance(params, (str, os.PathLike))
                else ""
            )
            raise ConfigError(
                "params must be a mapping {target: {name: value}} (or flat "
                f"{{'target.name': value}}), got {type(params).__name__} {params!r}{hint}"
            )
        grouped = group_params(params)
        problems = [
            f"params name a target {t!r} that has no search space (targets with spaces: "
            f"{', '.join(self._spaces) or 'none'})"
            for t in grouped
            if t not in self._spaces
        ]
        values = {}
        for target, hyp in self._spaces.items():
            try:
                values[target] = hyp.decode(grouped.get(target, {}))
            except HpoTrainerError as exc:
                problems.append(str(exc))
        raise_all(problems)
        return values

    def encode_params(self, values: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Return the searched part of ``values`` as stored: ``{target: {name: label}}``."""
        return {t: self._spaces[t].encode(v) for t, v in values.items() if t in self._spaces}

    def _build(
        self, target: str, values: Mapping[str, Any], *lead: Any, explain: bool = False
    ) -> Any:
        values = dict(values)
        cls = values.pop(CLASS, None) or self._classes[target]
        args, kwargs = self._primed[target]
        if target == "criterion" and not isinstance(cls, type):
            return cls  # an instance or a plain function is used as it is
        try:
            built = cls(*lead, *args, **{**kwargs, **values})
        except HpoTrainerError:
            raise
        except Exception as exc:
            if not explain:
                raise  # a trial records the user's own exception as its failure
            raise ConfigError(
                f"building the {target} {label_of(cls)} failed: {type(exc).__name__}: "
                f"{exc}; check set_{target}(...), prime_{target}(...) and the {target} "
                "search space"
            ) from exc
        if target == "model" and not isinstance(built, nn.Module):
            raise ConfigError(
                f"the model {label_of(cls)} built a {type(built).__name__}, not a "
                "torch.nn.Module; set_model takes an nn.Module subclass"
            )
        return built

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
            The run, ready for :func:`hpo_trainer.loop.fit`.

        Raises:
            ConfigError: If ``explain`` and building a target failed.

        """
        generator = torch.Generator()
        if seed is not None:
            seed_everything(seed)
            generator.manual_seed(seed)
        else:
            generator.seed()
        model = self._build("model", values.get("model", {}), explain=explain).to(self.device)
        criterion = self._build("criterion", values.get("criterion", {}), explain=explain)
        if isinstance(criterion, nn.Module):
            criterion = criterion.to(self.device)
        optimizer = self._build(
            "optimizer", values.get("optimizer", {}), model.parameters(), explain=explain
        )
        scheduler = None
        if self._classes["scheduler"] is not None or "scheduler" in self._spaces:
            scheduler = self._build(
                "scheduler", values.get("scheduler", {}), optimizer, explain=explain
            )
        amp = amp_mode(self.amp, self.device)
        scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
        batch_size = values.get("loader", {}).get("batch_size", self.batch_size)
        on_gpu = self.device if self.device.type == "cuda" else None

        def batches(ds: Any, shuffle: bool) -> Any:
            if ds is None:
                return None
            return data.make_batches(
                ds,
                batch_size=batch_size,
                shuffle=shuffle,
                generator=generator if shuffle else None,
                num_workers=self.num_workers,
                device=on_gpu,
            )

        state = FitState(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            device=self.device,
            epochs=epochs,
            params=self.encode_params(values),
            loader_generator=generator,
            scaler=scaler,
        )
        self.model, self.criterion, self.optimizer, self.scheduler = (
            model,
            criterion,
            optimizer,
            scheduler,
        )
        return Run(
            state=state,
            train_batches=batches(self.train_data, True),
            val_batches=batches(self.val_data, False),
            test_batches=batches(self.test_data, False) if with_test else None,
            amp=amp,
            criterion=criterion,
        )

    def fit(self, run: Run, callbacks: Sequence[Callback]) -> FitState:
        """Train ``run`` with :func:`hpo_trainer.loop.fit` and this trainer's ``pass_batch``."""
        self.model, self.criterion = run.state.model, run.criterion
        self.optimizer, self.scheduler = run.state.optimizer, run.state.scheduler
        self.history = run.state.history
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
    ) -> History:
        """Train one model for ``epochs`` epochs in a new run folder under ``runs_dir``.

        Args:
            epochs: How many epochs to train.
            update_every: Write TensorBoard scalars every this many epochs.
            save_every: Save a checkpoint every this many epochs (and after the last);
                ``None`` saves only after the last.
            params: The searched values to use (see :meth:`resolve_params`).
            resume: Continue a run from its newest good checkpoint: a run folder, or
                ``True`` for the newest run of this trainer's name.
            callbacks: More callbacks, called after the stock ones.
            run_name: The run folder's name prefix (default: the trainer's name).

        Returns:
            The run's history (also :attr:`history`).

        Raises:
            ConfigError: If the configuration or an argument is not valid.

        """
        problems = []
        for arg, value in (("epochs", epochs), ("update_every", update_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{arg} must be an integer >= 1, got {value!r}")
        if save_every is not None and (
            isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1
        ):
            problems.append(f"save_every must be an integer >= 1 or None, got {save_every!r}")
        if not isinstance(resume, (bool, str, os.PathLike)):
            problems.append(
                f"resume must be False, True (the newest run) or a run folder path, got {resume!r}"
            )
        if run_name is not None:
            problems.extend(p for p in [folder_name_problem("run_name", run_name)] if p)
        problems.extend(callback_problems(callbacks))
        raise_all(problems)
        self.check()
        ckpt = None
        run_dir: Path | None = None
        if resume:
            run_dir = self._resume_dir(resume)
            ckpt = checkpoint.load_latest(sorted((run_dir / "checkpoints").glob("epoch-*.pt")))
            if ckpt is None:
                raise ConfigError(
                    f"no good checkpoint to resume from in {run_dir / 'checkpoints'}"
                )
            values = self.resolve_params(ckpt["params"]) if self._spaces else {}
            logger.info("resuming %s from epoch %d (%s)", run_dir, ckpt["epoch"], ckpt["path"])
        else:
            values = self.resolve_params(params)
        # Build first: a class that fails to build must not leave an empty run folder.
        run = self.build(values, epochs=epochs, seed=self.seed, explain=True)
        if run_dir is None:
            run_dir = _new_run_dir(self.runs_dir, run_name or self.name)
        self.run_dir = run_dir
        if ckpt is not None:
            checkpoint.restore(run.state, ckpt)
        hparams = {f"{t}.{k}": v for t, vs in values.items() for k, v in vs.items()}
        stock: list[Callback] = [
            CheckpointCallback(run_dir / "checkpoints", every=save_every or epochs),
            TensorBoardCallback(run_dir, every=update_every, hparams=hparams),
        ]
        progress = ProgressCallback(enabled=False if self.quiet else None)
        if progress.enabled:  # its per-batch hook is only worth calling when it shows
            stock.append(progress)
        started = time.perf_counter()
        with stop_on_signals() as flag:
            flag.state = run.state
            try:
                self.fit(run, [*stock, *callbacks])
            finally:
                flag.state = None
        if run.state.interrupted and flag.signum is not None:
            raise Interrupted(
                flag.signum,
                f"stopped by {signal.Signals(flag.signum).name} after epoch {run.state.epoch}; "
                f"continue with train(..., resume={str(run_dir)!r}) or "
                f"`hpo-trainer train ... --resume {run_dir}`",
            )
        logger.info(
            "trained %d epochs in %.1fs into %s",
            run.state.epoch,
            time.perf_counter() - started,
            run_dir,
        )
        return self.history

    def _resume_dir(self, resume: bool | str | Path) -> Path:
        if resume is True:
            runs = sorted(
                (p for p in self.runs_dir.glob(f"{self.name}-*") if (p / "checkpoints").is_dir()),
                key=lambda p: p.stat().st_mtime,
            )
            if not runs:
                raise ConfigError(
                    f"resume=True, but {self.runs_dir} holds no run named {self.name}-* with "
                    "checkpoints; pass the run folder instead"
                )
            return runs[-1]
        path = Path(resume)
        if not (path / "checkpoints").is_dir():
            raise ConfigError(f"resume={str(resume)!r} is not a run folder with checkpoints/")
        return path

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
                ``timeout``, ``seed``, ``direction``, ``metric``, ...).

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
        self._best = self.resolve_params(best.params)
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
        state = self.__dict__.copy()
        for key in ("model", "criterion", "optimizer", "scheduler"):
            state[key] = None
        state["history"] = History()
        return state


def _as_tensors(ds: Any) -> Any:
    tensors = data.in_memory(ds) if ds is not None else None
    return ds if tensors is None else tensors


def _new_run_dir(runs_dir: Path, name: str) -> Path:
    """Create and return a new run folder; earlier runs are never touched."""
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
