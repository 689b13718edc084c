"""``hpo-trainer search studies/digits_mlp.py`` written by hand with plain Optuna (the same
model, optimizer, scheduler, space, split, pruner and storage), the baseline of ``bench_search``.

Usage: plain_optuna_digits.py main URL STUDY N_TRIALS N_PROCS EPOCHS DIGITS_FILE
"""

import runpy
import subprocess
import sys

import optuna
import torch
from torch import nn

MODE, URL, STUDY = sys.argv[1:4]
N_TRIALS, N_PROCS, EPOCHS = (int(a) for a in sys.argv[4:7])
DIGITS = sys.argv[7]


def objective(trial: optuna.Trial, splits: dict) -> float:
    """Train one trial; return its best val loss."""
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    hidden = trial.suggest_categorical("hidden_size", [16, 32, 64, 128])
    torch.manual_seed(trial.number)
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10, gamma=0.5)
    loss_fn = nn.CrossEntropyLoss()
    (x, y), (xv, yv) = splits["train"], splits["val"]
    best = float("inf")
    for epoch in range(1, EPOCHS + 1):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            val = loss_fn(model(xv), yv).item()
        best = min(best, val)
        trial.report(val, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return best


def worker(index: int) -> None:
    """Run this process's share of the trials."""
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    splits = runpy.run_path(DIGITS)["load_digits_split"]()  # the study file's split
    study = optuna.load_study(
        study_name=STUDY,
        storage=URL,
        sampler=optuna.samplers.TPESampler(seed=index),
        pruner=optuna.pruners.MedianPruner(),
    )
    n = N_TRIALS // N_PROCS + (index < N_TRIALS % N_PROCS)
    study.optimize(lambda t: objective(t, splits), n_trials=n)


if __name__ == "__main__":
    if MODE == "main":
        optuna.create_study(study_name=STUDY, storage=URL, pruner=optuna.pruners.MedianPruner())
        procs = [
            subprocess.Popen([sys.executable, __file__, "worker", *sys.argv[2:], str(i)])
            for i in range(N_PROCS)
        ]
        sys.exit(max(p.wait() for p in procs))
    worker(int(sys.argv[8]))
