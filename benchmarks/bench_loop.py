"""Benchmark the Trainer's loop and its in-memory data path on the CPU.

Two measurements, each interleaving repetitions of its variants and reporting medians:

(a) Loop overhead: seconds per epoch of ``Trainer.build`` + ``Trainer.fit`` (no callbacks)
    against a hand-written PyTorch loop doing the same work: the same MLP, in-memory tensors,
    batch size, SGD, CrossEntropyLoss, a reshuffle every epoch, a training pass and a
    validation pass, and the same metrics (loss and accuracy of both passes). ``Trainer.train``
    (which also writes a checkpoint and TensorBoard files) is reported alongside.
(b) Data path: one training epoch through the Trainer given tensors ``(x, y)`` (the fast
    path, ``hpo_trainer.data.TensorBatches``) against the template's way, a per-item dict
    ``Dataset`` read by a ``DataLoader`` with the default collate. The data-only iteration
    time of both is reported too.

Run:
    .venv/bin/python benchmarks/bench_loop.py            # full run, ~30-40 s on an idle machine
    .venv/bin/python benchmarks/bench_loop.py --quick    # smoke test, ~5 s

Torch runs one intra-op thread by default (``--threads``): on a small shared machine, with
every core busy, one competing process stalls every parallel op and single runs take 10-50x
longer, which no number of repeats averages out.

It always exits 0: the RESULT lines say whether each target is met.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import SGD
from torch.utils.data import DataLoader, Dataset

from hpo_trainer import Trainer
from hpo_trainer.train.data import TensorBatches

LOOP_TARGET = 1.05  # trainer / hand-written, at most
SPEEDUP_TARGET = 2.0  # template / fast path, at least
LR = 0.01
SEED = 0
NOISE_LIMIT = 1.10  # median / fastest repeat above this: the machine was busy


@dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run."""

    n_train: int  # training examples for (a)
    n_val: int  # validation examples for (a)
    n_fast: int  # training examples for (b)
    in_dim: int
    hidden: int
    classes: int
    batch_size: int
    epochs: int  # epochs per timed run in (a)
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


def random_data(n: int, cfg: Config, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``n`` random float32 inputs and int64 labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.in_dim, generator=g)
    y = torch.randint(0, cfg.classes, (n,), generator=g)
    return x, y


# -- (a) the hand-written loop ----------------------------------------------------------------


def hand_written(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    cfg: Config,
    epochs: int,
    seed: int = SEED,
) -> tuple[nn.Module, dict[str, float]]:
    """Train an MLP for ``epochs`` epochs with a plain loop; return it and the last metrics.

    Seeded like ``Trainer.build(seed=seed)``, so both draw the same weights and shuffles.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MLP(cfg.in_dim, cfg.hidden, cfg.classes)
    criterion = nn.CrossEntropyLoss()
    optimizer = SGD(model.parameters(), lr=LR)
    (x, y), (xv, yv) = train, val
    n, nv, bs = len(x), len(xv), cfg.batch_size
    metrics: dict[str, float] = {}
    for _ in range(epochs):
        model.train()
        loss_sum, correct = 0.0, 0
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            # index_select, not x[idx]: advanced indexing costs ~3x more per batch on the CPU
            # and would flatter the Trainer (which uses index_select) by about 2%.
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            out = model(xb)
            loss = criterion(out, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(yb)
            correct += int((out.argmax(dim=1) == yb).sum())
        metrics = {"train/loss": loss_sum / n, "train/acc": correct / n}
        model.eval()
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, nv, bs):
                xb, yb = xv[start : start + bs], yv[start : start + bs]
                out = model(xb)
                loss_sum += criterion(out, yb).item() * len(yb)
                correct += int((out.argmax(dim=1) == yb).sum())
        metrics.update({"val/loss": loss_sum / nv, "val/acc": correct / nv})
    return model, metrics


# -- the Trainer ------------------------------------------------------------------------------


def make_trainer(train: Any, val: Any, cfg: Config, runs_dir: Path) -> Trainer:
    """Return a Trainer for the MLP with SGD(lr=LR) and CrossEntropyLoss on the CPU."""
    tr = Trainer(
        train,
        val,
        None,
        batch_size=cfg.batch_size,
        device="cpu",
        seed=SEED,
        runs_dir=runs_dir,
        name="bench",
        quiet=True,
    )
    tr.set_model(MLP)
    tr.prime_model(cfg.in_dim, cfg.hidden, cfg.classes)
    tr.set_criterion(nn.CrossEntropyLoss)
    tr.set_optimizer(SGD)
    tr.prime_optimizer(lr=LR)
    return tr


def trainer_fit(tr: Trainer, epochs: int) -> dict[str, float]:
    """Build a fresh run and fit it with no callbacks; return the last metrics."""
    run = tr.build({}, epochs=epochs, seed=SEED)
    return tr.fit(run, callbacks=[]).metrics


# -- timing -----------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    """Return the wall-clock seconds of one call of ``fn``."""
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Time each variant ``repeats`` times, rotating their order every round.

    Every variant runs once untimed first (imports, allocator and thread-pool warm-up).
    """
    for fn in variants.values():
        fn()
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(timed(variants[name]))
    return times


def iterate(batches: Iterable[Any]) -> int:
    """Draw every batch of one epoch; return how many there were."""
    count = 0
    for _ in batches:
        count += 1
    return count


def spread(values: list[float]) -> str:
    """Return ``min..max`` of ``values`` in seconds."""
    return f"{min(values):.3f}..{max(values):.3f}"


def noisy(times: dict[str, list[float]]) -> list[str]:
    """Return the variants whose median is over 10% above their fastest repeat."""
    return [n for n, t in times.items() if statistics.median(t) > NOISE_LIMIT * min(t)]


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Return the median of the per-round ratios ``num / den`` (robust to slow drift)."""
    return statistics.median(a / b for a, b in zip(num, den))


def warn_if_noisy(times: dict[str, list[float]]) -> None:
    """Print a warning naming the variants whose repeats spread widely."""
    bad = noisy(times)
    if bad:
        print(
            f"  WARNING noisy machine: median > {NOISE_LIMIT:g} x fastest for {', '.join(bad)}; "
            "other processes were competing for the CPUs, rerun with more --repeats"
        )


def table(rows: list[tuple[str, list[float], float]], unit: str) -> Iterator[str]:
    """Yield the lines of a table: name, median, spread and the median scaled per ``unit``."""
    yield f"  {'variant':<34} {'median s':>9} {'min..max s':>13} {unit:>13}"
    for name, times, scale in rows:
        med = statistics.median(times)
        yield f"  {name:<34} {med:9.3f} {spread(times):>13} {med / scale:13.3f}"


def verdict(ok: bool) -> str:
    """Return PASS or FAIL."""
    return "PASS" if ok else "FAIL"


# -- the two measurements ---------------------------------------------------------------------


def check_same_work(cfg: Config, runs_dir: Path) -> str:
    """Train one epoch both ways on a small set and say whether the metrics agree.

    Both are seeded alike, so the same work gives the same weights and metrics; this shows
    that the comparison in (a) is like for like.
    """
    small = replace(cfg, n_train=1_024, n_val=256)
    train, val = random_data(small.n_train, small, 1), random_data(small.n_val, small, 2)
    tr = make_trainer(train, val, small, runs_dir)
    ours = trainer_fit(tr, 1)
    model, theirs = hand_written(train, val, small, 1)
    same_weights = all(
        torch.allclose(a, b, rtol=1e-5, atol=1e-6)
        for a, b in zip(tr.get_model().state_dict().values(), model.state_dict().values())
    )
    worst = max(abs(ours[k] - theirs[k]) for k in theirs)
    ok = same_weights and worst < 1e-5
    return (
        f"same weights: {same_weights}, largest metric difference {worst:.1e} -> "
        f"{'same work' if ok else 'DIFFERENT WORK (check the loops)'}"
    )


def bench_loop(cfg: Config, runs_dir: Path) -> float:
    """Run measurement (a); print its table and return trainer / hand-written."""
    train, val = random_data(cfg.n_train, cfg, 1), random_data(cfg.n_val, cfg, 2)
    fit_tr = make_trainer(train, val, cfg, runs_dir)
    train_tr = make_trainer(train, val, cfg, runs_dir)
    e = cfg.epochs
    times = interleaved(
        {
            "hand-written loop": lambda: hand_written(train, val, cfg, e),
            "Trainer.build + fit (no callbacks)": lambda: trainer_fit(fit_tr, e),
            "Trainer.train (ckpt + TensorBoard)": lambda: train_tr.train(e),
        },
        cfg.repeats,
    )
    print(
        f"\n(a) loop overhead: {cfg.n_train} train + {cfg.n_val} val examples x {cfg.in_dim}, "
        f"MLP {cfg.in_dim}-{cfg.hidden}-{cfg.classes}, batch {cfg.batch_size}, SGD, "
        f"{e} epoch(s) per timed run, {cfg.repeats} interleaved repeats"
    )
    for line in table([(name, t, e) for name, t in times.items()], "s / epoch"):
        print(line)
    hand = times["hand-written loop"]
    ratios: dict[str, float] = {}
    for label, name in (
        ("build+fit", "Trainer.build + fit (no callbacks)"),
        ("train()  ", "Trainer.train (ckpt + TensorBoard)"),
    ):
        ratios[label] = statistics.median(times[name]) / statistics.median(hand)
        print(
            f"  {label} / hand-written: {ratios[label]:.3f} (median of per-round ratios "
            f"{paired_ratio(times[name], hand):.3f}, of fastest "
            f"{min(times[name]) / min(hand):.3f})"
        )
    warn_if_noisy(times)
    return ratios["build+fit"]


def bench_data_path(cfg: Config, runs_dir: Path) -> float:
    """Run measurement (b); print its table and return template / fast path."""
    x, y = random_data(cfg.n_fast, cfg, 3)
    dict_ds = DictDataset(x, y)
    fast_tr = make_trainer((x, y), None, cfg, runs_dir)
    template_tr = make_trainer(dict_ds, None, cfg, runs_dir)
    gen = torch.Generator().manual_seed(SEED)
    fast_batches = TensorBatches((x, y), batch_size=cfg.batch_size, shuffle=True, generator=gen)
    loader = DataLoader(dict_ds, batch_size=cfg.batch_size, shuffle=True, generator=gen)
    names = {
        "fit": "Trainer fit, tensors (fast path)",
        "fit_t": "Trainer fit, dict Dataset+DataLoader",
        "data": "batches only, TensorBatches",
        "data_t": "batches only, DataLoader(dict)",
    }
    times = interleaved(
        {
            names["fit"]: lambda: trainer_fit(fast_tr, 1),
            names["fit_t"]: lambda: trainer_fit(template_tr, 1),
            names["data"]: lambda: iterate(fast_batches),
            names["data_t"]: lambda: iterate(loader),
        },
        cfg.repeats,
    )
    print(
        f"\n(b) data path: one training epoch on {cfg.n_fast} x {cfg.in_dim} float32, "
        f"batch {cfg.batch_size}, MLP {cfg.in_dim}-{cfg.hidden}-{cfg.classes}, "
        f"{cfg.repeats} interleaved repeats"
    )
    per = cfg.n_fast / 1e6
    for line in table([(name, t, per) for name, t in times.items()], "us / example"):
        print(line)
    med = {key: statistics.median(times[name]) for key, name in names.items()}
    speedup = med["fit_t"] / med["fit"]
    print(f"  training epoch speedup (template / fast): {speedup:.2f}x")
    print(f"  batches-only speedup   (template / fast): {med['data_t'] / med['data']:.1f}x")
    # The model's own work bounds what a faster data path can gain (Amdahl).
    compute = med["fit"] - med["data"]
    print(
        f"  model compute is {compute / med['fit']:.0%} of the fast epoch; with it fixed, "
        f"removing all loading time gains at most {med['fit_t'] / compute:.2f}x"
    )
    warn_if_noisy(times)
    return speedup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test under 30 s")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per variant")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: with every core busy, one competing process "
        "stalls each parallel op and a run can take 10-50x longer)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run both measurements and print a RESULT line per target; always return 0."""
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.repeats is not None:
        cfg = replace(cfg, repeats=max(1, args.repeats))
    torch.set_num_threads(max(1, args.threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already fixed: parallel work ran before main() in this process
        pass
    started = time.perf_counter()
    print(
        f"bench_loop: torch {torch.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()} "
        f"(interop {torch.get_num_interop_threads()}), mode {'quick' if args.quick else 'full'}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_loop_") as tmp:
        runs_dir = Path(tmp)
        print(f"sanity: {check_same_work(cfg, runs_dir)}")
        ratio = bench_loop(cfg, runs_dir)
        # The data path matters in proportion to the model's share of the epoch: measure it
        # on the wide MLP of (a) and on a narrow one, where loading is a larger share.
        speedups = {h: bench_data_path(replace(cfg, hidden=h), runs_dir) for h in (cfg.hidden, 32)}
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    print(
        f"RESULT loop_overhead_ratio={ratio:.2f} (target <= {LOOP_TARGET}) "
        f"{verdict(ratio <= LOOP_TARGET)}"
    )
    for hidden, speedup in speedups.items():
        print(
            f"RESULT fastpath_speedup_mlp{cfg.in_dim}_{hidden}={speedup:.1f}x "
            f"(target >= {SPEEDUP_TARGET:g}) {verdict(speedup >= SPEEDUP_TARGET)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
