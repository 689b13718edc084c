"""What a model's training inputs looked like, so that a run can tell inputs it cannot vouch for.

A run records, per input feature, the range of the training inputs as the model received
them (:func:`describe`). Before predicting, :func:`far_from_training` compares new inputs
with that range: a study that standardised its data inside ``make_trainer`` without
declaring it, or an image transform left out, gives inputs far outside every training range,
and the predictions would be silently wrong. A cell counts as far when it lies more than one
training range beyond the training minimum or maximum of its feature; an example (a row)
is far when more than :data:`FAR_SHARE` of its cells are, and inputs with a far row are
refused, naming the rows.
"""

from __future__ import annotations

import math
from typing import Any

import torch

#: Per-feature statistics are kept up to this many features; past it, one range for all.
MAX_FEATURES = 4096
#: The share of far cells above which inputs are not like the training inputs.
FAR_SHARE = 0.10
#: Training examples read to describe a dataset that is not in memory.
MAX_EXAMPLES = 4096


def describe(x: torch.Tensor) -> dict[str, Any] | None:
    """Return the per-feature ``min``, ``max``, ``mean`` and ``std`` of training inputs ``x``.

    Args:
        x: The training inputs, one example per row (any shape past the first dimension).

    Returns:
        Plain lists (JSON-ready), one value per feature (or one in all past
        :data:`MAX_FEATURES` features), and the number of examples ``n``; ``None`` for
        inputs that are not floating point or real numbers (token ids, for example).

    """
    if x.dim() == 0 or len(x) == 0 or x.is_complex():
        return None
    if not x.is_floating_point():
        return None  # integer inputs are ids or counts: a range says little about them
    flat = x.detach().reshape(len(x), -1).to("cpu", torch.float64)
    if flat.shape[1] > MAX_FEATURES:
        flat = flat.reshape(-1, 1)
    finite = torch.isfinite(flat).all(dim=1)
    flat = flat[finite]
    if len(flat) == 0:
        return None
    return {
        "n": int(finite.sum()),
        "min": flat.min(dim=0).values.tolist(),
        "max": flat.max(dim=0).values.tolist(),
        "mean": flat.mean(dim=0).tolist(),
        "std": flat.std(dim=0, unbiased=False).tolist(),
    }


def far_from_training(x: torch.Tensor, stats: dict[str, Any]) -> str | None:
    """Return why rows of ``x`` are unlike the training inputs described by ``stats``.

    Args:
        x: Inputs to predict, already shaped and transformed as the model takes them.
        stats: What :func:`describe` returned for the training inputs.

    Returns:
        ``None`` when no row has more than :data:`FAR_SHARE` of its values far from the
        training ranges; otherwise a sentence naming how many rows are far, the first of
        them, and the feature that is farthest off with its values against its range.

    Raises:
        ValueError: If ``stats`` do not fit ``x`` (another number of features).

    """
    low = torch.tensor(stats["min"], dtype=torch.float64)
    high = torch.tensor(stats["max"], dtype=torch.float64)
    flat = x.detach().reshape(len(x), -1).to("cpu", torch.float64)
    per_cell = len(low) == 1
    if not per_cell and flat.shape[1] != len(low):
        raise ValueError(f"statistics of {len(low)} features for inputs of {flat.shape[1]}")
    margin = torch.clamp(high - low, min=1e-6)
    far = (flat < low - margin) | (flat > high + margin)
    rows = (far.float().mean(dim=1) > FAR_SHARE).nonzero().flatten()
    if len(rows) == 0:
        return None
    shown = ", ".join(map(str, rows[:5].tolist())) + (", ..." if len(rows) > 5 else "")
    bad = far[rows]
    worst = 0 if per_cell else int(bad.float().mean(dim=0).argmax())
    column = flat[rows][:, worst]
    where = "" if per_cell else f"feature {worst} "
    return (
        f"{len(rows)} of {len(x)} examples (rows {shown}, counted from 0) have more than "
        f"{FAR_SHARE:.0%} of their values far outside the range the model was trained on "
        f"(e.g. {where}has mean {_num(float(column.mean()))} there, but training inputs "
        f"ranged {_num(float(low[worst]))} .. {_num(float(high[worst]))})"
    )


def _num(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)
