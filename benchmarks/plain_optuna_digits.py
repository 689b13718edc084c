"""``hpo-trainer search studies/digits_mlp.py`` written by hand with plain Optuna (the same
model, optimizer, scheduler, space, split, pruner and storage), the baseline of ``bench_search``.

Usage: plain_optuna_digits.py main URL STUDY N_TRIALS N_PROCS EPOCHS DIGITS_FILE
"""

import runpy
import subprocess
import sys

import optuna
import torch
from handwritten import fit_and_report
from torch import nn


def objective(trial: optuna.Trial, splits: dict, epochs: int) -> float:
    """Train one trial; return its best val loss."""
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    hidden = trial.suggest_categorical("hidden_size", [16, 32, 64, 128])
    torch.manual_seed(trial.number)
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10, gamma=0.5)
    loss_fn = nn.CrossEntropyLoss()
    return fit_and_report(trial, model, opt, loss_fn, splits, epochs=epochs, batch=64, sched=sched)


def worker(url: str, study: str, n_trials: int, epochs: int, digits: str, index: int) -> None:
    """Run this process's share of the trials."""
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    splits = runpy.run_path(digits)["load_digits_split"]()  # the study file's split
    study_ = optuna.load_study(
        study_name=study,
        storage=url,
        sampler=optuna.samplers.TPESampler(seed=index),
        pruner=optuna.pruners.MedianPruner(),
    )
    study_.optimize(lambda t: objective(t, splits, epochs), n_trials=n_trials)


if __name__ == "__main__":
    MODE, URL, STUDY = sys.argv[1:4]
    N_TRIALS, N_PROCS, EPOCHS = (int(a) for a in sys.argv[4:7])
    if MODE == "main":
        optuna.create_study(study_name=STUDY, storage=URL, pruner=optuna.pruners.MedianPruner())
        procs = [
            subprocess.Popen([sys.executable, __file__, "worker", *sys.argv[2:], str(i)])
            for i in range(N_PROCS)
        ]
        sys.exit(max(p.wait() for p in procs))
    index = int(sys.argv[8])
    share = N_TRIALS // N_PROCS + (index < N_TRIALS % N_PROCS)
    worker(URL, STUDY, share, EPOCHS, sys.argv[7], index)
