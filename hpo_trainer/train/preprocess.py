"""Input preprocessing that travels with the model: fitted once, saved and shipped inside it.

A study declares its preprocessing once (``Trainer.set_preprocess(Standardize())``); it is
fitted on the training inputs and every run's model becomes ``WithPreprocess(pre, model)``,
whose ``forward`` applies it first. Its statistics are buffers of the model, so they are in
every checkpoint, in ``model.pt`` and in the exported program, and ``predict`` and
``load_run`` apply them to arrays, CSV and images alike: nothing can be left out on the way
to the shipped model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from hpo_trainer.base.errors import ConfigError, is_int


class Standardize(nn.Module):
    """Subtract the training inputs' mean and divide by their standard deviation.

    The statistics are taken per feature (over the examples, ``dims=(0,)``) by
    :meth:`fit`; ``dims=(0, 2, 3)`` takes them per channel of ``(N, C, H, W)`` images. A
    feature that does not vary in the training set is only centred.

    Args:
        dims: The dimensions of a batch the statistics are taken over (0: the examples).

    Raises:
        ConfigError: If ``dims`` does not include 0 or holds anything but integers.

    """

    def __init__(self, dims: tuple[int, ...] = (0,)) -> None:
        super().__init__()
        dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
        if 0 not in dims or not all(is_int(d, 0) for d in dims):
            raise ConfigError(
                f"Standardize(dims=...) takes the dimensions to average over, 0 (the examples) "
                f"among them, e.g. (0,) per feature or (0, 2, 3) per image channel; got {dims!r}"
            )
        self.dims = dims
        self.register_buffer("mean", torch.empty(0))
        self.register_buffer("std", torch.empty(0))

    @property
    def fitted(self) -> bool:
        """Whether the statistics were fitted (or loaded)."""
        return self.mean.numel() > 0

    def fit(self, batches: torch.Tensor | Iterable[torch.Tensor]) -> Standardize:
        """Take the statistics of training inputs: one tensor, or batches of them.

        Raises:
            ConfigError: If the inputs are not floating point, empty or not finite.

        """
        parts = [batches] if isinstance(batches, torch.Tensor) else batches
        total = total_sq = None
        count = 0
        for x in parts:
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                kind = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
                raise ConfigError(
                    f"Standardize needs floating-point inputs, got {kind}; convert them "
                    "with x.float() (token ids and other integer inputs need no standardising)"
                )
            if max(self.dims) >= x.dim():
                raise ConfigError(
                    f"Standardize(dims={self.dims}) averages over dimension {max(self.dims)}, "
                    f"but the inputs have {x.dim()} (shape {tuple(x.shape)}); use dims=(0,) "
                    "per feature, or (0, 2, 3) per channel of (N, C, H, W) images"
                )
            x64 = x.detach().to("cpu", torch.float64)
            s, sq = x64.sum(dim=self.dims, keepdim=True), (x64**2).sum(dim=self.dims, keepdim=True)
            total = s if total is None else total + s
            total_sq = sq if total_sq is None else total_sq + sq
            count += x64.numel() // max(s.numel(), 1)
        if total is None or total_sq is None or count == 0:
            raise ConfigError("Standardize.fit got no training inputs; give it a non-empty set")
        mean = total / count
        std = (total_sq / count - mean**2).clamp(min=0).sqrt()
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ConfigError(
                "the training inputs hold NaN or infinite values, so Standardize cannot take "
                "their statistics; clean the data first"
            )
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        self.mean, self.std = mean[0].float(), std[0].float()  # one example's shape
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(x - mean) / std``.

        Raises:
            ConfigError: If :meth:`fit` was never called.

        """
        if not self.fitted:
            raise ConfigError(
                "Standardize was not fitted; declare it with Trainer.set_preprocess(...), "
                "which fits it on the training inputs"
            )
        return (x - self.mean) / self.std

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # The statistics' shape is only known once fitted: take it from what is loaded.
        for name in ("mean", "std"):
            value = state_dict.get(prefix + name)
            if isinstance(value, torch.Tensor):
                setattr(self, name, torch.empty_like(value, device=self.mean.device))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        """Show the dimensions and whether it was fitted."""
        return f"dims={self.dims}, fitted={self.fitted}"


class WithPreprocess(nn.Module):
    """A model whose inputs go through ``preprocess`` first: what a run trains and ships.

    Args:
        preprocess: The fitted preprocessing (its state is saved with the model's).
        model: The model; further positional and keyword arguments reach it unchanged.

    """

    def __init__(self, preprocess: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.preprocess, self.model = preprocess, model

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """Return ``model(preprocess(x), *args, **kwargs)``."""
        return self.model(self.preprocess(x), *args, **kwargs)


def fitted(preprocess: nn.Module | None, batches: Iterable[torch.Tensor]) -> nn.Module | None:
    """Return ``preprocess`` fitted on the training inputs ``batches`` (read only if needed).

    A module with a ``fit`` method that is not yet fitted is fitted; any other is used as
    it is.

    Raises:
        ConfigError: If ``preprocess`` is not an ``nn.Module``, or fitting it fails.

    """
    if preprocess is not None and not isinstance(preprocess, nn.Module):
        raise ConfigError(
            f"set_preprocess takes an nn.Module applied to each batch of inputs (e.g. "
            f"hpo_trainer.Standardize()), got {type(preprocess).__name__}"
        )
    fit = getattr(preprocess, "fit", None)
    if callable(fit) and not getattr(preprocess, "fitted", False):
        fit(batches)
    return preprocess
