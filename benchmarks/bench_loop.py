"""Benchmark the Trainer's loop and data path on the CPU, one torch thread: ``loop``, seconds
per epoch of ``Trainer.build`` + ``fit`` and of ``Trainer.train`` against a hand-written loop
doing the same work (checked first); ``data``, an epoch given tensors (the fast path) against
the template's dict ``Dataset`` + ``DataLoader``, batches alone, and the bound on any gain.

Run: .venv/bin/python benchmarks/bench_loop.py [--quick] [--only loop|data]
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import SGD
from torch.utils.data import DataLoader, Dataset

from hpo_trainer import Trainer
from hpo_trainer.train.data import TensorBatches

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import interleave, main, median, print_table, result  # noqa: E402
from synthetic_study import MLP  # noqa: E402

LOOP_TARGET = 1.05  # trainer / hand-written, at most
SPEEDUP_TARGET = 2.0  # template / fast path, at least
NOISE_LIMIT = 1.10  # median / fastest repeat above this: the machine was busy
IN_DIM, CLASSES, BATCH, LR, SEED = 784, 10, 128, 0.01, 0
# full, quick: train and val examples of loop, of data, epochs per timed run of loop, repeats
SIZES = ((20_000, 5_000, 60_000, 2, 7), (4_000, 1_000, 8_000, 1, 3))

Pair = tuple[torch.Tensor, torch.Tensor]


class DictDataset(Dataset):
    """The template's dataset: one ``{'x': tensor, 'y': tensor}`` dict per item."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def random_data(n: int, seed: int) -> Pair:
    """``n`` random float32 inputs and int64 labels."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, IN_DIM, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


def hand_written(train: Pair, val: Pair, hidden: int, epochs: int) -> tuple[nn.Module, dict]:
    """Train an MLP seeded like ``Trainer.build``; return it and the last epoch's metrics."""
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = MLP(IN_DIM, (hidden,), CLASSES)
    criterion, optimizer = nn.CrossEntropyLoss(), SGD(model.parameters(), lr=LR)
    (x, y), (xv, yv) = train, val
    metrics: dict[str, float] = {}
    for _ in range(epochs):
        model.train()
        loss_sum, correct = 0.0, 0
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), BATCH):
            idx = perm[start : start + BATCH]
            # index_select, as the Trainer does: x[idx] costs ~3x more per batch on the CPU
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            out = model(xb)
            loss = criterion(out, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(yb)
            correct += int((out.argmax(dim=1) == yb).sum())
        metrics = {"train/loss": loss_sum / len(x), "train/acc": correct / len(x)}
        model.eval()
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(xv), BATCH):
                xb, yb = xv[start : start + BATCH], yv[start : start + BATCH]
                out = model(xb)
                loss_sum += criterion(out, yb).item() * len(yb)
                correct += int((out.argmax(dim=1) == yb).sum())
        metrics |= {"val/loss": loss_sum / len(xv), "val/acc": correct / len(xv)}
    return model, metrics


def make_trainer(train: Any, val: Any, hidden: int, runs_dir: Path) -> Trainer:
    """A Trainer for the MLP with SGD(lr=LR) and CrossEntropyLoss on the CPU."""
    options = {"batch_size": BATCH, "device": "cpu", "seed": SEED, "name": "bench"}
    tr = Trainer(train, val, None, runs_dir=runs_dir, quiet=True, **options)
    tr.set_model(MLP)
    tr.prime_model(IN_DIM, (hidden,), CLASSES)
    tr.set_criterion(nn.CrossEntropyLoss)
    tr.set_optimizer(SGD)
    tr.prime_optimizer(lr=LR)
    return tr


def trainer_fit(tr: Trainer, epochs: int) -> dict[str, float]:
    """Build a fresh run and fit it with no callbacks; return the last metrics."""
    return tr.fit(tr.build({}, epochs=epochs, seed=SEED), callbacks=[]).metrics


def show(
    title: str, variants: dict[str, Callable[[], object]], repeats: int, per: float, unit: str
) -> list[float]:
    """Time the variants interleaved, after a warm-up; print the times, return the medians."""
    timers = {k: functools.partial(timeit.timeit, fn, number=1) for k, fn in variants.items()}
    times = interleave(timers, repeats, warm_up=True)
    med = {name: median(t) for name, t in times.items()}
    rows = [
        [name, f"{med[name]:.3f}", f"{min(t):.3f}..{max(t):.3f}", f"{med[name] / per:.3f}"]
        for name, t in times.items()
    ]
    headers = ["variant", "median s", "min..max s", unit]
    print_table(f"{title}, {repeats} interleaved repeats", headers, rows)
    noisy = [name for name, t in times.items() if med[name] > NOISE_LIMIT * min(t)]
    if noisy:
        print(f"  WARNING noisy machine: median > {NOISE_LIMIT:g} x fastest for {noisy}")
    return list(med.values())


def bench_loop(args: argparse.Namespace, tmp: Path) -> list[str]:
    """Part ``loop``: Trainer vs a hand-written loop, after a like-for-like check."""
    n_train, n_val, _, epochs, repeats = SIZES[args.quick]
    train, val = random_data(1_024, 1), random_data(256, 2)
    tr = make_trainer(train, val, 256, tmp)
    ours, (model, theirs) = trainer_fit(tr, 1), hand_written(train, val, 256, 1)
    pairs = zip(tr.get_model().state_dict().values(), model.state_dict().values())
    same = all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in pairs)
    worst = max(abs(ours[k] - theirs[k]) for k in theirs)
    train, val = random_data(n_train, 1), random_data(n_val, 2)
    fit_tr, train_tr = make_trainer(train, val, 256, tmp), make_trainer(train, val, 256, tmp)
    hand, fit, train_ = show(
        f"loop: {n_train} train + {n_val} val examples x {IN_DIM}, MLP {IN_DIM}-256-{CLASSES}, "
        f"batch {BATCH}, SGD, {epochs} epoch(s) per timed run",
        {
            "hand-written loop": lambda: hand_written(train, val, 256, epochs),
            "Trainer.build + fit (no callbacks)": lambda: trainer_fit(fit_tr, epochs),
            "Trainer.train (ckpt + TensorBoard)": lambda: train_tr.train(epochs),
        },
        repeats,
        epochs,
        "s / epoch",
    )
    ok, over = same and worst < 1e-5, fit / hand
    return [
        result("loop_same_work", float(ok), ".0f", "1: same weights and metrics", ok),
        result("loop_overhead_ratio", over, ".2f", f"<= {LOOP_TARGET}", over <= LOOP_TARGET),
        result("loop_train_ratio", train_ / hand, ".2f"),
    ]


def bench_data(args: argparse.Namespace, tmp: Path) -> list[str]:
    """Part ``data``: the wide MLP of ``loop`` and a narrow one, where loading weighs more."""
    _, _, n, _, repeats = SIZES[args.quick]
    (x, y), gen, results = random_data(n, 3), torch.Generator().manual_seed(SEED), []
    batches = TensorBatches((x, y), batch_size=BATCH, shuffle=True, generator=gen)
    loader = DataLoader(DictDataset(x, y), batch_size=BATCH, shuffle=True, generator=gen)
    for hidden in (256, 32):
        fast, template = (make_trainer(d, None, hidden, tmp) for d in ((x, y), DictDataset(x, y)))
        fit, fit_t, data, data_t = show(
            f"data: one training epoch on {n} x {IN_DIM} float32, batch {BATCH}, MLP "
            f"{IN_DIM}-{hidden}-{CLASSES}",
            {
                "Trainer fit, tensors (fast path)": functools.partial(trainer_fit, fast, 1),
                "Trainer fit, dict Dataset+DataLoader": functools.partial(
                    trainer_fit, template, 1
                ),
                "batches only, TensorBatches": functools.partial(collections.deque, batches, 0),
                "batches only, DataLoader(dict)": functools.partial(collections.deque, loader, 0),
            },
            repeats,
            n / 1e6,
            "us / example",
        )
        compute = fit - data  # the model's own work bounds what a faster data path gains
        name, speedup = f"fastpath_speedup_mlp{IN_DIM}_{hidden}", fit_t / fit
        results += [
            result(name, speedup, ".2f", f">= {SPEEDUP_TARGET:g}", speedup >= SPEEDUP_TARGET),
            result(f"{name}_batches_only", data_t / data, ".1f"),
            result(
                f"{name}_bound", fit_t / compute, ".2f", "none: the most any data path could gain"
            ),
        ]
    return results


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    sys.exit(main(__doc__ or "", {"loop": bench_loop, "data": bench_data}))
