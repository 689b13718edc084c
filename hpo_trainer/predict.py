"""Use a finished run's model: :func:`load_run` and ``hpo-trainer predict``.

A run folder written by ``hpo-trainer train`` (or :func:`hpo_trainer.final.final_run`)
holds ``model.pt2``, a ``torch.export`` program, where the model could be captured, the
weights (``model.pt``) and ``summary.json``, which names the study file and options that
built the model, its params, and the shape of one input example. The program is loaded when
there is one; otherwise the study file's model is rebuilt with the run's params and the
weights are loaded into it with ``weights_only=True`` (no pickled code runs).

Image folders are read through the study file's evaluation transform: a module-level
``EVAL_TRANSFORM`` (a callable taking a PIL image in RGB and returning a tensor) or a
``make_transform()`` function returning one. Without either, images are converted to
grayscale (one-channel models) or kept in RGB, and scaled to [0, 1].
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpo_trainer import inputs
from hpo_trainer.errors import CheckpointError, ConfigError, DataError
from hpo_trainer.files import write_output

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

    @property
    def classification(self) -> bool:
        """Whether the run classifies (it recorded an accuracy); else its outputs are values."""
        return not self.metrics or any(k.endswith("/acc") for k in self.metrics)

    def predict(self, x: Any, *, batch_size: int = 256) -> Any:
        """Return the model's outputs for the examples ``x`` (in eval mode, without grad).

        Args:
            x: A tensor or array with one example per row (first dimension).
            batch_size: Examples per forward pass.

        Returns:
            The outputs: a tensor for a tensor ``x``, else a numpy array.

        Raises:
            DataError: If the examples do not have the shape the model was trained on.

        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        as_numpy = not isinstance(x, torch.Tensor)
        tensor = self._fit_shape(torch.as_tensor(np.asarray(x)) if as_numpy else x)
        if tensor.is_floating_point() or self.input_dtype.is_floating_point:
            tensor = tensor.to(self.input_dtype)
        outputs = []
        with torch.no_grad():
            for chunk in tensor.split(batch_size):
                outputs.append(self.model(chunk.to(self.device)).detach().cpu())
        result = torch.cat(outputs) if outputs else torch.empty(0)
        return result.numpy() if as_numpy else result

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
            from hpo_trainer.studyfile import load_module

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
        return _default_transform(gray and self.input_shape[0] == 1)  # type: ignore[index]


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


def _default_transform(gray: bool) -> Callable[[Any], Any]:
    from torchvision.transforms.functional import pil_to_tensor

    def transform(image: Any) -> torch.Tensor:
        return pil_to_tensor(image.convert("L") if gray else image).float() / 255.0

    return transform


def _read_summary(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise ConfigError(
            f"run folder {str(run_dir)!r} does not exist; give a folder that "
            "`hpo-trainer train` printed, e.g. runs/digits_mlp-20261129-091738"
        )
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"run folder {str(run_dir)!r} has no summary.json: it is not a finished run; "
            "finish it with `hpo-trainer train STUDY --params best.json --resume RUN_DIR`"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{str(path)!r} cannot be read ({exc}); train the run again") from None
    if not isinstance(summary, dict):
        raise ConfigError(f"{str(path)!r} must hold a JSON object; train the run again")
    return summary


def load_run(
    run_dir: str | os.PathLike[str],
    *,
    study_file: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    exported: bool = True,
) -> LoadedRun:
    """Load a finished run's model for prediction.

    Args:
        run_dir: The run folder (``hpo-trainer train`` prints it).
        study_file: The study file that builds the model (default: the one recorded in
            ``summary.json``); only needed without an exported program.
        options: ``make_trainer`` options (default: the recorded ones).
        device: Where the model runs (``"auto"``, ``"cpu"``, ``"cuda:0"``, ...).
        exported: Use the exported program when there is one (``False``: always rebuild).

    Returns:
        The loaded run.

    Raises:
        ConfigError: If the folder is not a finished run, or the model cannot be rebuilt.
        CheckpointError: If the weights or the program are missing, damaged or do not fit.

    """
    from hpo_trainer.train.devices import resolve_device

    run_dir = Path(run_dir)
    summary = _read_summary(run_dir)
    made_by = summary.get("study_file") or {}
    path = str(study_file) if study_file is not None else made_by.get("path")
    where = resolve_device(device)
    shape = (summary.get("input") or {}).get("shape")
    program_path = run_dir / "model.pt2"
    if exported and program_path.is_file():
        program = _load_program(program_path, summary)
        model, source = program.module().to(where), "exported_program"
        shape = shape if shape is not None else _program_shape(program)
    else:
        opts = dict(options if options is not None else made_by.get("options") or {})
        model, source = _rebuild(run_dir, summary, path, opts).to(where).eval(), "state_dict"
    return LoadedRun(
        run_dir=run_dir,
        model=model,
        summary=summary,
        source=source,
        device=where,
        input_shape=tuple(shape) if shape is not None else None,
        study_file=path,
    )


def _load_program(path: Path, summary: dict[str, Any]) -> Any:
    recorded = (summary.get("files") or {}).get("exported_program_sha256")
    data = path.read_bytes()
    fix = "delete it to use the weights in model.pt instead, or train the run again"
    if recorded and hashlib.sha256(data).hexdigest() != recorded:
        raise CheckpointError(
            f"exported program {str(path)!r} is damaged: its checksum does not match "
            f"summary.json (truncated or overwritten); {fix}"
        )
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


def _rebuild(
    run_dir: Path, summary: dict[str, Any], study_file: str | None, options: dict[str, Any]
) -> torch.nn.Module:
    """Build the study file's model with the run's params and load the run's weights."""
    from hpo_trainer.build import build_target
    from hpo_trainer.studyfile import load_trainer_from_file
    from hpo_trainer.train import checkpoint

    weights = run_dir / "model.pt"
    if not weights.is_file():
        raise CheckpointError(
            f"run folder {str(run_dir)!r} has no weights (model.pt) and no exported program "
            "(model.pt2); the run did not finish: train it again with `hpo-trainer train`"
        )
    if study_file is None:
        raise ConfigError(
            f"run {str(run_dir)!r} has no exported program and does not record its study "
            "file; name it with --study-file (and its -o options)"
        )
    state = checkpoint.load(weights)
    trainer = load_trainer_from_file(study_file, **options, runs_dir=run_dir.parent, quiet=True)
    values = trainer.resolve_params(summary.get("params") or None)
    model = build_target(
        "model",
        trainer.classes["model"],
        trainer.primed["model"],
        values.get("model", {}),
        explain=True,
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"the weights in {str(weights)!r} do not fit the model that {study_file!r} builds "
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
) -> bytes:
    """Predict the examples in a file or image folder and write them to ``out``.

    Args:
        run: The loaded run.
        source: A ``.npy``, ``.npz``, ``.pt`` or ``.csv`` file, or a folder of images.
        out: A ``.csv``, ``.json`` or ``.npy`` file (``None``: return CSV, written nowhere).
        key: The array of an ``.npz`` (or the entry of a ``.pt`` dict) to read.
        batch_size: Examples per forward pass.

    Returns:
        The bytes written (or, without ``out``, the CSV to print).

    Raises:
        ConfigError: If ``out`` has no known suffix or cannot be written.
        DataError: If the input cannot be read or does not fit the model; nothing is written.

    """
    kind = inputs.output_kind(out)  # before any work: a bad --out fails at once
    transform = run.eval_transform() if Path(source).is_dir() else None
    x, names = inputs.read_input(source, key=key, transform=transform)
    outputs = run.predict(x, batch_size=batch_size).numpy()
    classification = run.classification and outputs.ndim == 2 and outputs.shape[1] > 1
    data = inputs.render(outputs, kind=kind, classification=classification, names=names)
    if out is not None:
        write_output(data, out, "predictions.csv")
    return data
