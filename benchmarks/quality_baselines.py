"""The two baselines of ``bench_quality``, written by hand as a user would: N worker processes
on one SQLite study, a plain training loop, the same data, models and space as
``quality_tasks.py``.

- ``optuna``: Optuna's TPE sampler (its defaults) and ``MedianPruner(n_startup_trials=5,
  n_warmup_steps=3)``, the hand-written script that the issue measured against.
- ``asha``: random search with asynchronous successive halving (Optuna's
  ``SuccessiveHalvingPruner`` with its defaults), which is what Ray Tune's ASHA does.

Usage: quality_baselines.py main KIND URL STUDY FAMILY N_TRIALS N_PROCS EPOCHS SEED
(``main`` creates the study and starts N_PROCS workers: ``worker ... INDEX``).
"""

import subprocess
import sys

import optuna
import quality_tasks as tasks
import torch
from handwritten import fit_and_report

MODE, KIND, URL, STUDY, FAMILY = sys.argv[1:6]
N_TRIALS, N_PROCS, EPOCHS, SEED = (int(a) for a in sys.argv[6:10])


def pruner() -> optuna.pruners.BasePruner:
    """The baseline's pruner."""
    if KIND == "optuna":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3)
    return optuna.pruners.SuccessiveHalvingPruner()


def sampler(index: int) -> optuna.samplers.BaseSampler:
    """The baseline's sampler, seeded per worker."""
    seed = 1000 * SEED + index
    if KIND == "optuna":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def objective(trial: optuna.Trial, splits: dict) -> float:
    """Train one trial; return its best validation loss."""
    spec = tasks.SPECS[FAMILY]
    name = trial.suggest_categorical("optimizer", ["SGD", "Adam"])
    lr = trial.suggest_float("lr", *spec.lr, log=True)
    width = trial.suggest_int("width", *spec.width, log=True)
    dropout = trial.suggest_float("dropout", 0.0, 0.5)
    batch = trial.suggest_categorical("batch_size", list(spec.batch_sizes))
    torch.manual_seed(1000 * SEED + trial.number)
    model_class, n_in, n_out = tasks.shape(FAMILY)
    model = model_class(n_in, n_out, width=width, dropout=dropout)
    if name == "SGD":
        momentum = trial.suggest_float("momentum", 0.0, 0.99)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = tasks.loss_class(FAMILY)()
    return fit_and_report(trial, model, opt, loss_fn, splits, epochs=EPOCHS, batch=batch)


def worker(index: int) -> None:
    """Run this process's share of the trials."""
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    splits = tasks.load(FAMILY)
    study = optuna.load_study(
        study_name=STUDY, storage=URL, sampler=sampler(index), pruner=pruner()
    )
    n = N_TRIALS // N_PROCS + (index < N_TRIALS % N_PROCS)
    study.optimize(lambda t: objective(t, splits), n_trials=n)


if __name__ == "__main__":
    if MODE == "main":
        optuna.create_study(study_name=STUDY, storage=URL, pruner=pruner())
        procs = [
            subprocess.Popen([sys.executable, __file__, "worker", *sys.argv[2:], str(i)])
            for i in range(N_PROCS)
        ]
        sys.exit(max(p.wait() for p in procs))
    worker(int(sys.argv[10]))
