"""Benchmark the Trainer's loop and its in-memory data path on the CPU.

Two parts, each interleaving repetitions of its variants and reporting medians:

``loop``
    Seconds per epoch of ``Trainer.build`` + ``Trainer.fit`` (no callbacks) against a
    hand-written PyTorch loop doing the same work: the same MLP, in-memory tensors, batch
    size, SGD, CrossEntropyLoss, a reshuffle every epoch, a training and a validation pass
    and the same metrics. ``Trainer.train`` (which also writes a checkpoint and TensorBoard
    files) is reported alongside. A sanity check first trains one epoch both ways and
    compares weights and metrics: the comparison is like for like.
``data``
    One training epoch through the Trainer given tensors ``(x, y)`` (the fast path,
    ``TensorBatches``) against the template's per-item dict ``Dataset`` read by a
    ``DataLoader``, for an MLP 784-256-10 and a narrow 784-32-10; the batches-only time of
    both, and the bound the model's own compute puts on any data-path speed-up.

Run:
    .venv/bin/python benchmarks/bench_loop.py              # full run, ~40 s idle
    .venv/bin/python benchmarks/bench_loop.py --quick      # smoke test, ~5 s
    .venv/bin/python benchmarks/bench_loop.py --only data

Torch runs one intra-op thread by default (``--threads``): on a small shared machine one
competing process stalls every parallel op and single runs take 10-50x longer.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import SGD
from torch.utils.data import DataLoader, Dataset

from hpo_trainer import Trainer
from hpo_trainer.train.data import TensorBatches

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import Result, interleaved, main, median, print_table  # noqa: E402

LOOP_TARGET = 1.05  # trainer / hand-written, at most
SPEEDUP_TARGET = 2.0  # template / fast path, at least
NOISE_LIMIT = 1.10  # median / fastest repeat above this: the machine was busy
LR, SEED = 0.01, 0


@dataclass(frozen=True)
class Config:
    """Sizes of one run."""

    n_train: int  # training examples of ``loop``
    n_val: int
    n_fast: int  # training examples of ``data``
    in_dim: int
    hidden: int
    classes: int
    batch_size: int
    epochs: int  # epochs per timed run of ``loop``
    repeats: int


FULL = Config(20_000, 5_000, 60_000, 784, 256, 10, 128, epochs=2, repeats=7)
QUICK = Config(4_000, 1_000, 8_000, 784, 256, 10, 128, epochs=1, repeats=3)


class MLP(nn.Module):
    """``in_dim -> hidden -> classes`` with ReLU."""

    def __init__(self, in_dim: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.h = nn.Linear(in_dim, hidden)
        self.o = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits."""
        return self.o(torch.relu(self.h(x)))


class DictDataset(Dataset):
    """The template's dataset: one ``{'x': tensor, 'y': tensor}`` dict per item."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


Pair = tuple[torch.Tensor, torch.Tensor]


def random_data(n: int, cfg: Config, seed: int) -> Pair:
    """``n`` random float32 inputs and int64 labels."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, cfg.in_dim, generator=g), torch.randint(
        0, cfg.classes, (n,), generator=g
    )


def hand_written(train: Pair, val: Pair, cfg: Config, epochs: int) -> tuple[nn.Module, dict]:
    """Train an MLP with a plain loop, seeded like ``Trainer.build(seed=SEED)``; return it
    and the last epoch's metrics."""
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = MLP(cfg.in_dim, cfg.hidden, cfg.classes)
    criterion, optimizer = nn.CrossEntropyLoss(), SGD(model.parameters(), lr=LR)
    (x, y), (xv, yv), bs = train, val, cfg.batch_size
    metrics: dict[str, float] = {}
    for _ in range(epochs):
        model.train()
        loss_sum, correct = 0.0, 0
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), bs):
            idx = perm[start : start + bs]
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
            for start in range(0, len(xv), bs):
                xb, yb = xv[start : start + bs], yv[start : start + bs]
                out = model(xb)
                loss_sum += criterion(out, yb).item() * len(yb)
                correct += int((out.argmax(dim=1) == yb).sum())
        metrics |= {"val/loss": loss_sum / len(xv), "val/acc": correct / len(xv)}
    return model, metrics


def make_trainer(train: Any, val: Any, cfg: Config, runs_dir: Path) -> Trainer:
    """A Trainer for the MLP with SGD(lr=LR) and CrossEntropyLoss on the CPU."""
    tr = Trainer(
        train, val, None, batch_size=cfg.batch_size, device="cpu", seed=SEED,
        runs_dir=runs_dir, name="bench", quiet=True,
    )  # fmt: skip
    tr.set_model(MLP)
    tr.prime_model(cfg.in_dim, cfg.hidden, cfg.classes)
    tr.set_criterion(nn.CrossEntropyLoss)
    tr.set_optimizer(SGD)
    tr.prime_optimizer(lr=LR)
    return tr


def trainer_fit(tr: Trainer, epochs: int) -> dict[str, float]:
    """Build a fresh run and fit it with no callbacks; return the last metrics."""
    return tr.fit(tr.build({}, epochs=epochs, seed=SEED), callbacks=[]).metrics


def iterate(batches: Any) -> int:
    """Draw every batch of one epoch."""
    return sum(1 for _ in batches)


def show(title: str, times: dict[str, list[float]], per: float, unit: str) -> dict[str, float]:
    """Print the times of each variant (and a warning if noisy); return the medians."""
    med = {name: median(t) for name, t in times.items()}
    rows = [
        [name, f"{med[name]:.3f}", f"{min(t):.3f}..{max(t):.3f}", f"{med[name] / per:.3f}"]
        for name, t in times.items()
    ]
    print_table(title, ["variant", "median s", "min..max s", unit], rows)
    noisy = [name for name, t in times.items() if med[name] > NOISE_LIMIT * min(t)]
    if noisy:
        print(f"  WARNING noisy machine: median > {NOISE_LIMIT:g} x fastest for {noisy}")
    return med


def setup(args: argparse.Namespace) -> Config:
    """The sizes for ``args``, and torch's threads."""
    torch.set_num_threads(max(1, args.threads))
    cfg = QUICK if args.quick else FULL
    return cfg if args.repeats is None else replace(cfg, repeats=max(1, args.repeats))


def bench_loop(args: argparse.Namespace, tmp: Path) -> list[Result]:
    """Part ``loop``: Trainer vs a hand-written loop, after a like-for-like check."""
    cfg = setup(args)
    small = replace(cfg, n_train=1_024, n_val=256)
    train, val = random_data(small.n_train, small, 1), random_data(small.n_val, small, 2)
    tr = make_trainer(train, val, small, tmp)
    ours = trainer_fit(tr, 1)
    model, theirs = hand_written(train, val, small, 1)
    same = all(
        torch.allclose(a, b, rtol=1e-5, atol=1e-6)
        for a, b in zip(tr.get_model().state_dict().values(), model.state_dict().values())
    )
    worst = max(abs(ours[k] - theirs[k]) for k in theirs)
    print(f"  sanity: same weights {same}, largest metric difference {worst:.1e}")

    train, val = random_data(cfg.n_train, cfg, 1), random_data(cfg.n_val, cfg, 2)
    fit_tr, train_tr, e = (
        make_trainer(train, val, cfg, tmp),
        make_trainer(train, val, cfg, tmp),
        cfg.epochs,
    )
    variants = {
        "hand-written loop": lambda: hand_written(train, val, cfg, e),
        "Trainer.build + fit (no callbacks)": lambda: trainer_fit(fit_tr, e),
        "Trainer.train (ckpt + TensorBoard)": lambda: train_tr.train(e),
    }
    times = interleaved(variants, cfg.repeats)
    med = show(
        f"loop: {cfg.n_train} train + {cfg.n_val} val examples x {cfg.in_dim}, MLP "
        f"{cfg.in_dim}-{cfg.hidden}-{cfg.classes}, batch {cfg.batch_size}, SGD, {e} epoch(s) "
        f"per timed run, {cfg.repeats} interleaved repeats",
        times,
        e,
        "s / epoch",
    )
    hand, fit_name, train_name = list(variants)
    fit_ratio, train_ratio = med[fit_name] / med[hand], med[train_name] / med[hand]
    paired = median(a / b for a, b in zip(times[fit_name], times[hand]))
    print(
        f"  build+fit / hand-written {fit_ratio:.3f} (median of per-round ratios "
        f"{paired:.3f}); train() / hand-written {train_ratio:.3f}"
    )
    ok = same and worst < 1e-5
    return [
        Result("loop_same_work", float(ok), ".0f", "1: same weights and metrics", ok),
        Result(
            "loop_overhead_ratio", fit_ratio, ".2f", f"<= {LOOP_TARGET}", fit_ratio <= LOOP_TARGET
        ),
        Result("loop_train_ratio", train_ratio, ".2f"),
    ]


def data_path(cfg: Config, tmp: Path) -> list[Result]:
    """One data-path comparison at ``cfg.hidden``; its speed-up as a RESULT."""
    x, y = random_data(cfg.n_fast, cfg, 3)
    fast_tr, template_tr = (
        make_trainer((x, y), None, cfg, tmp),
        make_trainer(DictDataset(x, y), None, cfg, tmp),
    )
    gen = torch.Generator().manual_seed(SEED)
    fast_batches = TensorBatches((x, y), batch_size=cfg.batch_size, shuffle=True, generator=gen)
    loader = DataLoader(DictDataset(x, y), batch_size=cfg.batch_size, shuffle=True, generator=gen)
    times = interleaved(
        {
            "Trainer fit, tensors (fast path)": lambda: trainer_fit(fast_tr, 1),
            "Trainer fit, dict Dataset+DataLoader": lambda: trainer_fit(template_tr, 1),
            "batches only, TensorBatches": lambda: iterate(fast_batches),
            "batches only, DataLoader(dict)": lambda: iterate(loader),
        },
        cfg.repeats,
    )
    fit, fit_t, data, data_t = show(
        f"data: one training epoch on {cfg.n_fast} x {cfg.in_dim} float32, batch "
        f"{cfg.batch_size}, MLP {cfg.in_dim}-{cfg.hidden}-{cfg.classes}, {cfg.repeats} "
        "interleaved repeats",
        times,
        cfg.n_fast / 1e6,
        "us / example",
    ).values()
    compute = fit - data  # the model's own work bounds what a faster data path gains (Amdahl)
    print(
        f"  epoch speed-up {fit_t / fit:.2f}x, batches only {data_t / data:.1f}x; the model is "
        f"{compute / fit:.0%} of the fast epoch, so at most {fit_t / compute:.2f}x"
    )
    name = f"fastpath_speedup_mlp{cfg.in_dim}_{cfg.hidden}"
    return [
        Result(name, fit_t / fit, ".2f", f">= {SPEEDUP_TARGET:g}", fit_t / fit >= SPEEDUP_TARGET),
        Result(f"{name}_batches_only", data_t / data, ".1f"),
        Result(f"{name}_bound", fit_t / compute, ".2f", "none: the most any data path could gain"),
    ]


def bench_data(args: argparse.Namespace, tmp: Path) -> list[Result]:
    """Part ``data``: the wide MLP of ``loop`` and a narrow one, where loading weighs more."""
    cfg = setup(args)
    return [r for hidden in (cfg.hidden, 32) for r in data_path(replace(cfg, hidden=hidden), tmp)]


def options(parser: argparse.ArgumentParser) -> None:
    """This benchmark's own options."""
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")


if __name__ == "__main__":
    torch.set_num_interop_threads(1)
    sys.exit(main(__doc__ or "", {"loop": bench_loop, "data": bench_data}, extra=options))
