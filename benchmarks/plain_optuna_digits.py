"""The digits search written by hand with plain Optuna: the baseline of ``bench_search.py
--only cli`` for ``hpo-trainer search studies/digits_mlp.py``.

The same MLP, SGD with momentum 0.9 and ``StepLR(10, gamma=0.5)``, lr log-uniform
1e-5..1e-1, hidden size in 16/32/64/128, batches of 64, the study file's digits split, the
val loss reported every epoch, ``MedianPruner()``, a storage URL, and N worker processes of
one torch thread each running ``study.optimize``.

Usage: plain_optuna_digits.py main URL STUDY N_TRIALS N_PROCS EPOCHS DIGITS_FILE
"""

import importlib.util
import subprocess
import sys

import optuna
import torch
from torch import nn

MODE, URL, STUDY = sys.argv[1:4]
N_TRIALS, N_PROCS, EPOCHS = (int(a) for a in sys.argv[4:7])
DIGITS = sys.argv[7]


def load_split() -> dict:
    """The study file's digits split."""
    spec = importlib.util.spec_from_file_location("digits_mlp", DIGITS)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.load_digits_split()


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
    splits = load_split()
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
