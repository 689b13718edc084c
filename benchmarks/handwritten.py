"""The training loop of the hand-written Optuna baselines, as a user would write it: shuffle,
step through mini-batches, evaluate, report the epoch's validation loss and ask the pruner.

It imports nothing of hpo-trainer, so the baselines pay nothing for it.
"""

import optuna
import torch
from torch import nn


def fit_and_report(
    trial: optuna.Trial,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: nn.Module,
    splits: dict,
    *,
    epochs: int,
    batch: int,
    sched: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> float:
    """Train ``model`` for ``epochs``, reporting each epoch; return the best validation loss.

    Raises:
        optuna.TrialPruned: If the pruner stops the trial, or its loss stops being finite.

    """
    (x, y), (xv, yv) = splits["train"], splits["val"]
    best = float("inf")
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        if sched is not None:
            sched.step()
        model.eval()
        with torch.no_grad():
            val = loss_fn(model(xv), yv).item()
        if val != val or val in (float("inf"), float("-inf")):
            raise optuna.TrialPruned(f"diverged at epoch {epoch}")
        best = min(best, val)
        trial.report(val, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return best
