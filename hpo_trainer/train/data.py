"""Datasets in, batches out.

Data held in memory (tensors, numpy arrays, a ``TensorDataset``) takes a fast path: each
batch is one index into the stored tensors with a slice of a shuffled permutation, with no
per-item ``__getitem__`` and no collate. Any other ``Dataset`` (``ImageFolder``, a dict
dataset as in the template) goes through a ``DataLoader``. Batches are dicts
(``batch['x']``, ``batch['y']``) or tuples, as the items are.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from hpo_trainer.base.errors import DataError, is_int

Batch = Union[dict[str, Any], tuple[Any, ...]]
Tensors = Union[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]


def _as_tensor(array: Any) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array
    tensor = torch.as_tensor(np.asarray(array))
    # numpy defaults to float64; models default to float32.
    return tensor.float() if tensor.dtype == torch.float64 else tensor


def _is_array(x: Any) -> bool:
    return isinstance(x, (torch.Tensor, np.ndarray))


def in_memory(data: Any) -> Tensors | None:
    """Return the tensors of in-memory data, or ``None`` if ``data`` is a general dataset.

    In memory means a ``TensorDataset``, a tuple or list of tensors / numpy arrays, or a
    dict of them, all with the same first dimension.

    Raises:
        DataError: If in-memory data has mismatched lengths or is empty.

    """
    if isinstance(data, TensorDataset):
        tensors: Tensors = tuple(data.tensors)
    elif isinstance(data, (tuple, list)) and data and all(_is_array(x) for x in data):
        tensors = tuple(_as_tensor(x) for x in data)
    elif isinstance(data, Mapping) and data and all(_is_array(x) for x in data.values()):
        tensors = {str(k): _as_tensor(v) for k, v in data.items()}
    else:
        return None
    parts = tensors.values() if isinstance(tensors, dict) else tensors
    lengths = {len(t) for t in parts}
    if len(lengths) != 1:
        raise DataError(
            f"in-memory data must have one length along the first dimension, got lengths "
            f"{sorted(lengths)}; check that inputs and targets have as many rows"
        )
    if lengths == {0}:
        raise DataError("the dataset is empty; give it at least one example")
    return tensors


def tensors_or_dataset(data: Any) -> Any:
    """Return in-memory data as its tensors (converted once, not in every run), else ``data``.

    Raises:
        DataError: If in-memory data has mismatched lengths or is empty.

    """
    tensors = in_memory(data) if data is not None else None
    return data if tensors is None else tensors


def length(data: Any) -> int:
    """Return the number of examples in ``data``."""
    tensors = in_memory(data)
    if tensors is not None:
        first = next(iter(tensors.values())) if isinstance(tensors, dict) else tensors[0]
        return len(first)
    return len(data)


def check_dataset(data: Any, split: str) -> None:
    """Check that ``data`` is usable as the ``split`` set before any training starts.

    Raises:
        DataError: If it is neither in-memory data nor a sized dataset whose items are dicts
            or tuples.

    """
    if in_memory(data) is not None:
        return
    if isinstance(data, Mapping):
        kinds = ", ".join(f"{k!r}: {type(v).__name__}" for k, v in list(data.items())[:4])
        raise DataError(
            f"the {split} set is a dict, so every value must be a tensor or numpy array of "
            f"one length, got {{{kinds}}}; convert them, e.g. "
            "{k: torch.as_tensor(v) for k, v in data.items()}"
        )
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise DataError(
            f"the {split} set must be a Dataset (with __getitem__ and __len__), a "
            f"TensorDataset, or a tuple/dict of tensors or arrays; got {type(data).__name__}"
        )
    if len(data) == 0:
        raise DataError(f"the {split} set is empty; give it at least one example")
    try:
        item = data[0]
    except Exception as exc:  # the user's __getitem__: anything may go wrong in it
        raise DataError(
            f"item 0 of the {split} set cannot be read: {type(exc).__name__}: {exc}; "
            f"check the {type(data).__name__}'s __getitem__"
        ) from exc
    if not isinstance(item, (Mapping, tuple, list)):
        raise DataError(
            f"items of the {split} set must be dicts ({{'x': ..., 'y': ...}}) or tuples "
            f"((x, y)), but item 0 is a {type(item).__name__}: {_short(item)}; return a dict "
            "or a tuple from __getitem__"
        )


class TensorBatches:
    """Batches of in-memory tensors by indexing with slices of a shuffled permutation.

    Args:
        tensors: A tuple or dict of tensors with the same first dimension.
        batch_size: Examples per batch (the last batch may be smaller).
        shuffle: Shuffle every epoch.
        generator: The generator that draws the permutations (for reproducible runs).
        device: Move the tensors here once, up front, when given.

    """

    def __init__(
        self,
        tensors: Tensors,
        *,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
    ) -> None:
        if device is not None:
            tensors = _map(tensors, lambda t: t.to(device))
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        parts = tensors.values() if isinstance(tensors, dict) else tensors
        self._n = len(next(iter(parts)))

    def __len__(self) -> int:
        return -(-self._n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        bs = self.batch_size
        if not self.shuffle:
            for start in range(0, self._n, bs):
                yield _map(self.tensors, lambda t, s=start: t[s : s + bs])
            return
        perm = torch.randperm(self._n, generator=self.generator)
        device = _first(self.tensors).device
        if perm.device != device:
            perm = perm.to(device)
        for start in range(0, self._n, bs):
            idx = perm[start : start + bs]
            yield _map(self.tensors, lambda t, i=idx: t.index_select(0, i))


def make_batches(
    data: Any,
    *,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
    device: torch.device | None = None,
) -> TensorBatches | DataLoader:
    """Return an iterable of batches over ``data``: the fast path when it is in memory.

    Args:
        data: In-memory data or a ``Dataset``.
        batch_size: Examples per batch.
        shuffle: Shuffle every epoch.
        generator: Draws the shuffles, for reproducible runs.
        num_workers: ``DataLoader`` worker processes (general datasets only).
        device: Where in-memory tensors are moved once, up front (a CUDA device); ``None``
            keeps them where they are.

    Returns:
        An iterable of batches with a length.

    """
    if not is_int(batch_size, 1):
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    tensors = in_memory(data)
    if tensors is not None:
        return TensorBatches(
            tensors, batch_size=batch_size, shuffle=shuffle, generator=generator, device=device
        )
    if generator is None and not shuffle:
        # A loader draws its workers' base seed from its generator on every pass; without
        # one it draws from the global generator, so evaluating a test set would change the
        # next epoch's dropout and a run would no longer repeat the trial that chose it.
        generator = torch.Generator()
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=device is not None and device.type == "cuda",
    )


def split_xy(batch: Batch) -> tuple[Any, Any]:
    """Return the inputs and targets of a batch: ``batch['x'], batch['y']`` or ``batch[:2]``.

    Raises:
        DataError: If the batch has no inputs and targets in either form.

    """
    if isinstance(batch, Mapping):
        missing = [k for k in ("x", "y") if k not in batch]
        if missing:
            raise DataError(
                f"a dict batch needs keys 'x' and 'y', but {missing} is missing (keys: "
                f"{sorted(batch)}); rename them, or override Trainer.pass_batch"
            )
        return batch["x"], batch["y"]
    if isinstance(batch, Sequence) and len(batch) >= 2:
        return batch[0], batch[1]
    raise DataError(
        f"a batch must be a dict with 'x' and 'y' or a tuple (x, y), got {_short(batch)}; "
        "override Trainer.pass_batch for other layouts"
    )


def _map(tensors: Tensors, fn: Any) -> Any:
    if isinstance(tensors, dict):
        return {k: fn(v) for k, v in tensors.items()}
    return tuple(fn(t) for t in tensors)


def _first(tensors: Tensors) -> torch.Tensor:
    return next(iter(tensors.values())) if isinstance(tensors, dict) else tensors[0]


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def input_batches(data: Any, *, limit: int | None = None) -> Iterator[torch.Tensor]:
    """Yield the inputs (``x``) of ``data`` in batches, in order, up to ``limit`` examples.

    In-memory data yields its one input tensor (sliced to ``limit``); a general dataset is
    read through a ``DataLoader`` without shuffling, 256 examples at a time.
    """
    tensors = in_memory(data)
    if tensors is not None:
        x = split_xy(tensors)[0]
        yield x if limit is None else x[:limit]
        return
    seen = 0
    for batch in make_batches(data, batch_size=256, shuffle=False):
        x = split_xy(batch)[0]
        if limit is not None and seen + len(x) > limit:
            x = x[: limit - seen]
        seen += len(x)
        yield x
        if limit is not None and seen >= limit:
            return


def merge(first: Any, second: Any) -> Any:
    """Return one dataset holding ``first`` then ``second`` (e.g. train + val for a final run).

    In-memory data stays in memory (and on the fast path); other datasets are concatenated.
    """
    a, b = in_memory(first), in_memory(second)
    if a is not None and b is not None and type(a) is type(b):
        if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
            return {k: torch.cat([a[k], b[k]]) for k in a}
        if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
            return tuple(torch.cat([x, y]) for x, y in zip(a, b))
    from torch.utils.data import ConcatDataset

    return ConcatDataset([first, second])


__all__ = [
    "Batch",
    "Dataset",
    "TensorBatches",
    "check_dataset",
    "in_memory",
    "input_batches",
    "length",
    "make_batches",
    "merge",
    "split_xy",
]
