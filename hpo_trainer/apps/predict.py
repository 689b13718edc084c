"""Use a finished run's model: :func:`load_run` and ``hpo-trainer predict``.

A run folder written by ``hpo-trainer train`` or :meth:`hpo_trainer.Trainer.train` holds
the weights (``model.pt``), ``summary.json`` (the study file and options that built the
model, its params, the shape and range of the training inputs) and, where the model could
be captured, ``model.pt2``, a ``torch.export`` program.

Loading a run executes nothing from the run folder: the model is rebuilt from the study
file (or the ``Trainer`` given) with the run's params, and the weights are loaded with
``weights_only=True``. A study file recorded inside the run folder is refused. The exported
program is loaded only on request (``trust_exported=True``, ``--trust-exported``), because
loading one unpickles what it holds. Declared preprocessing (``Trainer.set_preprocess``) is
part of the model, so predictions get it whatever the input's kind.

Image folders are read through the study file's evaluation transform: a module-level
``EVAL_TRANSFORM`` (a callable taking a PIL image in RGB and returning a tensor) or a
``make_transform()`` function returning one. Without either, images are converted to
grayscale (one-channel models) or kept in RGB, and scaled to [0, 1]. Inputs far outside the
range of the training inputs are refused (:mod:`hpo_trainer.train.inputstats`): a run
cannot vouch for predictions on them.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hpo_trainer.apps import inputs
from hpo_trainer.base.errors import CheckpointError, ConfigError, DataError, is_int
from hpo_trainer.base.files import write_output
from hpo_trainer.facade.runfiles import read_summary
from hpo_trainer.train.inputstats import far_from_training

if TYPE_CHECKING:
    from hpo_trainer.facade.trainer import Trainer

logger = logging.getLogger(__name__)


class LoadedRun:
    """A finished run's model, ready to predict (see :func:`load_run`).

    Attributes:
        run_dir: The run folder.
        model: The model (an exported program's module, or the rebuilt ``nn.Module``).
        params: The run's params, by target.
        metrics: The run's final metrics (``test/acc``, ``val/loss``, ...).
        summary: The whole ``summary.json``.
        source: ``"exported_program"`` or ``"state_dict"``: where the model came from.
        device: Where the model runs.
        input_shape: The shape of one example (without the batch), if known.
        study_file: The study file that built the model, if known.

    """

    def __init__(
        self,
        *,
        run_dir: Path,
        model: Any,
        summary: dict[str, Any],
        source: str,
        device: torch.device,
        input_shape: tuple[int, ...] | None,
        study_file: str | None,
    ) -> None:
        self.run_dir, self.model, self.summary = run_dir, model, summary
        self.params: dict[str, Any] = dict(summary.get("params") or {})
        self.metrics: dict[str, float] = dict(summary.get("final_metrics") or {})
        self.source, self.device, self.input_shape = source, device, input_shape
        self.study_file = study_file
        recorded = (summary.get("input") or {}).get("dtype", "float32")
        self.input_dtype = getattr(torch, str(recorded), torch.float32)

    def reads(self) -> list[Path]:
        """Return the files this run was loaded from (an output must be none of them)."""
        files = [self.run_dir / n for n in ("summary.json", "model.pt", "model.pt2")]
        return files + ([Path(self.study_file)] if self.study_file else [])

    @property
    def classification(self) -> bool:
        """Whether the run classifies (it recorded an accuracy); else its outputs are values."""
        return not self.metrics or any(k.endswith("/acc") for k in self.metrics)

    def predict(self, x: Any, *, batch_size: int = 256, check_inputs: bool = True) -> Any:
        """Return the model's outputs for the examples ``x`` (in eval mode, without grad).

        Args:
            x: A tensor or array with one example per row (first dimension).
            batch_size: Examples per forward pass.
            check_inputs: Refuse inputs far outside the range of the training inputs.

        Returns:
            The outputs: a tensor for a tensor ``x``, else a numpy array.

        Raises:
            DataError: If the examples are not finite numbers, do not have the shape the
                model was trained on, or (with ``check_inputs``) lie far outside the range
                of the training inputs.

        """
        if not is_int(batch_size, 1):
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        as_numpy = not isinstance(x, torch.Tensor)
        tensor = _as_tensor(x) if as_numpy else inputs.as_examples(x, "the examples")
        tensor = self._cast(self._fit_shape(tensor))
        stats = (self.summary.get("input") or {}).get("stats")
        if check_inputs and stats:
            try:
                problem = far_from_training(tensor, stats)
            except ValueError as exc:
                raise ConfigError(
                    f"summary.json of run {str(self.run_dir)!r} is damaged: its input "
                    f"statistics do not fit the model's inputs ({exc}); train the run again"
                ) from None
            if problem is not None:
                raise DataError(
                    f"run {str(self.run_dir)!r} cannot vouch for predictions on this input: "
                    f"{problem}. If the study preprocesses its inputs inside make_trainer, "
                    "declare the preprocessing with Trainer.set_preprocess(...) so that it "
                    "travels with the model, or apply it to this input; if the input is "
                    "right, pass --no-input-check (check_inputs=False)"
                )
        outputs = []
        with torch.no_grad():
            for chunk in tensor.split(batch_size):
                try:
                    out = self.model(chunk.to(self.device))
                except Exception as exc:  # the user's model, on an input it may not take
                    raise DataError(
                        f"the model of run {str(self.run_dir)!r} failed on this input "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                        f"it was trained on examples of shape {self.input_shape} and type "
                        f"{self.input_dtype}"
                    ) from None
                outputs.append(out.detach().cpu())
        result = torch.cat(outputs) if outputs else torch.empty(0)
        return result.numpy() if as_numpy else result

    def _cast(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` in the type the model was trained on; fractions for an integer model
        are refused, not truncated.
        """
        if self.input_dtype.is_floating_point:
            return x.to(self.input_dtype)
        if x.is_floating_point():
            if not bool((x == x.round()).all()):
                raise DataError(
                    f"run {str(self.run_dir)!r} was trained on whole numbers "
                    f"({self.input_dtype}), but this input holds fractions; give the "
                    "inputs as the training set had them (not rescaled)"
                )
        return x.to(self.input_dtype)

    def _fit_shape(self, x: torch.Tensor) -> torch.Tensor:
        """Check ``x`` against the example shape; flat rows of an image model are reshaped."""
        expected = self.input_shape
        if expected is None or tuple(x.shape[1:]) == expected:
            return x
        if x.dim() == 2 and len(expected) > 1 and x.shape[1] == math.prod(expected):
            return x.reshape(len(x), *expected)
        raise DataError(
            f"the input has shape {tuple(x.shape)}, but the model of run {str(self.run_dir)!r} "
            f"expects (N, {', '.join(map(str, expected))}): {_describe(expected)}; "
            f"{_fix(expected)}"
        )

    def eval_transform(self) -> Callable[[Any], Any]:
        """Return the transform for image files: the study file's, or a plain default."""
        if self.study_file is not None:
            from hpo_trainer.facade.studyfile import load_module

            module = load_module(self.study_file)
            named = getattr(module, "EVAL_TRANSFORM", None)
            make = getattr(module, "make_transform", None)
            if named is None and callable(make):
                named = make()
            if named is not None:
                if not callable(named):
                    raise ConfigError(
                        f"EVAL_TRANSFORM in study file {self.study_file!r} must be a callable "
                        f"taking a PIL image, got {type(named).__name__}"
                    )
                return named
        gray = self.input_shape is not None and len(self.input_shape) == 3
        return inputs.default_transform(gray and self.input_shape[0] == 1)  # type: ignore[index]


def _as_tensor(x: Any) -> torch.Tensor:
    """Return array-like examples as a tensor of numbers, or say why they are not."""
    if x is None or isinstance(x, (str, bytes, Mapping)):
        raise DataError(
            f"predict takes a tensor or an array of examples, one per row, got "
            f"{type(x).__name__}; e.g. run.predict(np.load('x.npy'))"
        )
    try:
        array = np.asarray(x)
    except Exception as exc:  # ragged lists and other shapes numpy cannot stack
        raise DataError(f"the examples cannot be read as one array ({exc})") from None
    return inputs.as_examples(array, "the examples")


def _describe(shape: tuple[int, ...]) -> str:
    if len(shape) == 1:
        return f"{shape[0]} features per example"
    if len(shape) == 3:
        return f"images of {shape[0]}x{shape[1]}x{shape[2]} (channels x height x width)"
    return f"examples of shape {shape}"


def _fix(shape: tuple[int, ...]) -> str:
    if len(shape) == 1:
        return f"give one example per row with {shape[0]} columns"
    if len(shape) == 3:
        return (
            f"resize the images to {shape[1]}x{shape[2]}, or name an EVAL_TRANSFORM in the "
            "study file that does"
        )
    return "reshape the input to match"


def load_run(
    run_dir: str | os.PathLike[str],
    *,
    study_file: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    trainer: Trainer | None = None,
    trust_exported: bool = False,
) -> LoadedRun:
    """Load a finished run's model for prediction, executing nothing from the run folder.

    Args:
        run_dir: The run folder (``hpo-trainer train`` prints it; ``Trainer.run_dir``).
        study_file: The study file that builds the model (default: the one recorded in
            ``summary.json``).
        options: ``make_trainer`` options (default: the recorded ones).
        device: Where the model runs (``"auto"``, ``"cpu"``, ``"cuda:0"``, ...).
        trainer: The ``Trainer`` that builds the model, instead of a study file (a run
            trained from Python records none).
        trust_exported: Load the run's ``torch.export`` program instead of rebuilding the
            model. Loading one unpickles data, which can run code: only for run folders
            you trust.

    Returns:
        The loaded run.

    Raises:
        ConfigError: If the folder is not a finished run, its summary is damaged, or the
            model cannot be rebuilt.
        CheckpointError: If the weights or the program are missing, damaged or do not fit.

    """
    from hpo_trainer.train.devices import resolve_device

    if not isinstance(run_dir, (str, os.PathLike)):
        raise ConfigError(
            f"load_run takes the run folder's path, got {type(run_dir).__name__} {run_dir!r}; "
            "e.g. load_run('runs/digits_mlp-20261129-091738') or load_run(trainer.run_dir)"
        )
    from hpo_trainer.facade.trainer import Trainer

    if trainer is not None and not isinstance(trainer, Trainer):
        raise ConfigError(
            f"trainer must be the hpo_trainer.Trainer that trained the run, got "
            f"{type(trainer).__name__}"
        )
    if options is not None and not (
        isinstance(options, Mapping) and all(isinstance(k, str) for k in options)
    ):
        raise ConfigError(f"options must map make_trainer keywords to values, got {options!r}")
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    made_by = summary.get("study_file") or {}
    path = str(study_file) if study_file is not None else made_by.get("path")
    # Checked whatever builds the model: image folders are read through its transform.
    _check_outside(path, run_dir, given=study_file is not None)
    where = resolve_device(device)
    shape = (summary.get("input") or {}).get("shape")
    program_path = run_dir / "model.pt2"
    if trust_exported and program_path.is_file():
        program = _load_program(program_path)
        model, source = program.module().to(where), "exported_program"
        shape = shape if shape is not None else _program_shape(program)
    else:
        if trainer is None:
            opts = dict(options if options is not None else made_by.get("options") or {})
            trainer = _trainer(run_dir, path, opts)
        model, source = _rebuild(run_dir, summary, trainer).to(where).eval(), "state_dict"
    return LoadedRun(
        run_dir=run_dir,
        model=model,
        summary=summary,
        source=source,
        device=where,
        input_shape=tuple(shape) if shape is not None else None,
        study_file=path,
    )


def _check_outside(study_file: str | None, run_dir: Path, *, given: bool) -> None:
    """Refuse a recorded study file that the run's folders could have brought along.

    ``train`` records an absolute path to the study file it was given. A relative path, or
    one inside the run folder or the folder of runs around it, came with the runs (a copied
    or unpacked ``runs/``): loading it would run code that came with the run.
    """
    if study_file is None or given:
        return
    folder, file = run_dir.resolve(), Path(study_file)
    runs = folder.parent
    if not file.is_absolute():
        where = "a relative path"
    elif file.resolve() == folder or folder in file.resolve().parents:
        where = "a file inside its own folder"
    elif runs in file.resolve().parents:
        where = f"a file inside the folder of runs {str(runs)!r}"
    else:
        return
    raise ConfigError(
        f"run {str(run_dir)!r} records as its study file {where} ({study_file!r}); loading "
        "a run never runs code that came with the run. Pass the study file that trained it "
        "with --study-file (study_file=...)"
    )


def _load_program(path: Path) -> Any:
    fix = "delete it to use the weights in model.pt instead, or train the run again"
    try:
        return torch.export.load(path)
    except Exception as exc:  # torch raises many kinds for a bad archive
        raise CheckpointError(
            f"exported program {str(path)!r} cannot be loaded ({type(exc).__name__}); {fix}"
        ) from exc


def _program_shape(program: Any) -> list[int] | None:
    """Return the example shape of the program's input, if its dims past the batch are fixed."""
    names = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in names:
            val = node.meta.get("val")
            dims = list(getattr(val, "shape", ())[1:])
            return [int(d) for d in dims] if all(isinstance(d, int) for d in dims) else None
    return None


def _trainer(run_dir: Path, study_file: str | None, options: dict[str, Any]) -> Trainer:
    """Build the trainer of the study file that made the run."""
    from hpo_trainer.facade.studyfile import load_trainer_from_file

    if study_file is None:
        raise ConfigError(
            f"run {str(run_dir)!r} records no study file (it was trained from Python); "
            "pass the Trainer that trained it (load_run(run_dir, trainer=tr)) or a study "
            "file (--study-file); --trust-exported loads its exported program instead, if "
            "you trust the folder"
        )
    options = {k: v for k, v in options.items() if k not in ("runs_dir", "quiet")}
    return load_trainer_from_file(study_file, **options, runs_dir=run_dir.parent, quiet=True)


def _rebuild(run_dir: Path, summary: dict[str, Any], trainer: Trainer) -> torch.nn.Module:
    """Build the trainer's model with the run's params and load the run's weights."""
    from hpo_trainer.train import checkpoint

    weights = run_dir / "model.pt"
    if not weights.is_file():
        raise CheckpointError(
            f"run folder {str(run_dir)!r} has no weights (model.pt); the run did not finish: "
            "train it again with `hpo-trainer train`"
        )
    state = checkpoint.load(weights)
    planned = (summary.get("recipe") or {}).get("epochs", summary.get("epochs"))
    values = trainer.resolve_params(summary.get("params") or None)
    model = trainer.build_model(values, epochs=planned if isinstance(planned, int) else None)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"the weights in {str(weights)!r} do not fit the model that the study file builds "
            f"with the run's params ({exc}); pass the study file and -o options that made "
            "the run"
        ) from None
    return model


def predict_file(
    run: LoadedRun,
    source: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    key: str | None = None,
    batch_size: int = 256,
    header: bool | None = None,
    check_inputs: bool = True,
) -> bytes:
    """Predict the examples in a file or image folder and write them to ``out``.

    Args:
        run: The loaded run.
        source: A ``.npy``, ``.npz``, ``.pt`` or ``.csv`` file, or a folder of images.
        out: A ``.csv``, ``.json`` or ``.npy`` file (``None``: return CSV, written nowhere);
            never the input itself.
        key: The array of an ``.npz`` (or the entry of a ``.pt`` dict) to read.
        batch_size: Examples per forward pass.
        header: Whether a CSV's first row is a header (``None``: decide from the row).
        check_inputs: Refuse inputs far outside the range of the training inputs.

    Returns:
        The bytes written (or, without ``out``, the CSV to print).

    Raises:
        ConfigError: If ``out`` has no known suffix, is the input, or cannot be written.
        DataError: If the input cannot be read or does not fit the model; nothing is written.

    """
    kind = inputs.output_kind(out)  # before any work: a bad --out fails at once
    if out is not None:
        from hpo_trainer.base.files import check_output_path

        check_output_path(out, "predictions.csv", reads=[source, *run.reads()])
    transform = run.eval_transform() if Path(source).is_dir() else None
    x, names = inputs.read_input(source, key=key, transform=transform, header=header)
    outputs = run.predict(x, batch_size=batch_size, check_inputs=check_inputs).numpy()
    classification = run.classification and outputs.ndim == 2 and outputs.shape[1] > 1
    data = inputs.render(outputs, kind=kind, classification=classification, names=names)
    if out is not None:
        write_output(data, out, "predictions.csv", reads=[source, *run.reads()])
    return data
