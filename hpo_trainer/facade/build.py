"""The per-run factory: a fresh model, criterion, optimizer, scheduler and batches for one run.

Everything is built from one set of values (``{target: {name: value}}``) on top of the
classes and primed arguments a user set, so that each trial and each training run starts
from scratch and repeats exactly under the same seed. What was built is kept apart from the
configuration, in the trainer's :class:`~hpo_trainer.facade.state.TrainerState`.
:data:`~hpo_trainer.EPOCHS` in a value or a primed argument becomes the run's epoch count
here, in :func:`build_target`, for every target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hpo_trainer.base.errors import ConfigError, HpoTrainerError
from hpo_trainer.facade.checks import label_of
from hpo_trainer.space import CLASS
from hpo_trainer.space.epochs import resolve_epochs
from hpo_trainer.train import data
from hpo_trainer.train.devices import amp_mode, seed_everything
from hpo_trainer.train.state import FitState, Run


def build_target(
    target: str,
    cls: Any,
    primed: tuple[tuple, dict],
    values: Mapping[str, Any],
    *lead: Any,
    epochs: int | None = None,
    explain: bool = False,
) -> Any:
    """Build ``target`` as ``cls(*lead, *primed_args, **primed_kwargs, **values)``.

    :data:`~hpo_trainer.EPOCHS` expressions in the primed arguments and the values (also
    inside lists, tuples and dicts) are replaced by their values for ``epochs`` first.

    Args:
        target: ``model``, ``criterion``, ``optimizer`` or ``scheduler``.
        cls: The class (or factory) set for ``target``; a ``class`` entry in ``values``
            (a searched class) takes its place.
        primed: The primed ``(args, kwargs)`` of ``target``.
        values: The values of ``target``'s space.
        *lead: Leading arguments from the run (the model's parameters, the optimizer).
        epochs: The epochs of the run being built, for :data:`~hpo_trainer.EPOCHS`.
        explain: Turn an exception raised by a user class into a :class:`ConfigError`.

    Returns:
        The built object; a criterion that is an instance or function, as it is.

    Raises:
        ConfigError: If ``explain`` and building failed, a model is not an ``nn.Module``,
            or an ``EPOCHS`` expression is not a positive integer for ``epochs``.

    """
    values = dict(values)
    cls = values.pop(CLASS, None) or cls
    if target == "criterion" and not isinstance(cls, type):
        return cls  # an instance or a plain function is used as it is
    args = tuple(
        resolve_epochs(a, epochs, f"prime_{target} positional argument {i + 1}")
        for i, a in enumerate(primed[0])
    )
    kwargs = {
        k: resolve_epochs(v, epochs, f"prime_{target}({k}=...)") for k, v in primed[1].items()
    }
    values = {k: resolve_epochs(v, epochs, f"{target} argument {k!r}") for k, v in values.items()}
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


def build_run(
    values: Mapping[str, Mapping[str, Any]],
    *,
    classes: Mapping[str, Any],
    primed: Mapping[str, tuple[tuple, dict]],
    with_scheduler: bool,
    datasets: tuple[Any, Any, Any],
    batch_size: int,
    num_workers: int,
    device: torch.device,
    amp: bool | str | None,
    epochs: int,
    seed: int | None,
    with_test: bool,
    params: dict[str, Any],
    explain: bool = False,
) -> Run:
    """Build a fresh run from one set of values.

    Args:
        values: The values of each target (``{target: {name: value}}``).
        classes: The class (or factory) set for each target.
        primed: The primed ``(args, kwargs)`` of each target.
        with_scheduler: Build a scheduler (one is set or searched).
        datasets: The train, validation and test sets (``None`` for a missing one).
        batch_size: Examples per batch, unless ``values['loader']`` has ``batch_size``.
        num_workers: ``DataLoader`` worker processes for general datasets.
        device: Where the model and the batches go.
        amp: The mixed precision asked for (see :func:`~hpo_trainer.train.devices.amp_mode`).
        epochs: The epoch the run stops after; :data:`~hpo_trainer.EPOCHS` in a value or a
            primed argument becomes this number.
        seed: Seeds the model's initialisation and the shuffles; ``None`` draws a seed.
        with_test: Evaluate the test set every epoch.
        params: The searched values as stored, recorded on the run's state.
        explain: Turn an exception raised by a user class into a :class:`ConfigError`
            naming the target and the class (a trial keeps the original exception).

    Returns:
        The run, ready for :func:`hpo_trainer.train.loop.fit`.

    Raises:
        ConfigError: If ``explain`` and building a target failed, or an ``EPOCHS``
            expression is not a positive integer for ``epochs``.

    """
    generator = _seeded_generator(seed)

    def make(target: str, *lead: Any) -> Any:
        return build_target(
            target,
            classes[target],
            primed[target],
            values.get(target, {}),
            *lead,
            epochs=epochs,
            explain=explain,
        )

    model = make("model").to(device)
    criterion = make("criterion")
    if isinstance(criterion, nn.Module):
        criterion = criterion.to(device)
    optimizer = make("optimizer", model.parameters())
    scheduler = make("scheduler", optimizer) if with_scheduler else None
    mode = amp_mode(amp, device)
    size = values.get("loader", {}).get("batch_size", batch_size)
    size = resolve_epochs(size, epochs, "loader argument 'batch_size'")
    train_ds, val_ds, test_ds = datasets
    train, val, test = (
        _batches(ds, size, shuffle_by, num_workers, device)
        for ds, shuffle_by in (
            (train_ds, generator),
            (val_ds, None),
            (test_ds if with_test else None, None),
        )
    )
    state = FitState(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        device=device,
        epochs=epochs,
        params=params,
        loader_generator=generator,
        scaler=torch.amp.GradScaler("cuda") if mode == "fp16" else None,
    )
    return Run(
        state=state,
        train_batches=train,
        val_batches=val,
        test_batches=test,
        amp=mode,
        criterion=criterion,
    )


def _seeded_generator(seed: int | None) -> torch.Generator:
    """Seed every generator with ``seed`` and return the one that shuffles the training set."""
    generator = torch.Generator()
    if seed is not None:
        seed_everything(seed)
        generator.manual_seed(seed)
    else:
        generator.seed()
    return generator


def _batches(
    ds: Any,
    batch_size: int,
    generator: torch.Generator | None,
    num_workers: int,
    device: torch.device,
) -> Any:
    """Return the batches of ``ds``, shuffled by ``generator`` if one is given."""
    if ds is None:
        return None
    return data.make_batches(
        ds,
        batch_size=batch_size,
        shuffle=generator is not None,
        generator=generator,
        num_workers=num_workers,
        device=device if device.type == "cuda" else None,
    )
