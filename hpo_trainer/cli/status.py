"""What `hpo-trainer status` prints: each study's trials by state, best, running, budget.

The search prints the same at its end.
"""

from __future__ import annotations

import json
from typing import Any

from hpo_trainer.base.errors import ConfigError, StorageError, did_you_mean


def pick_study(storage: Any, name: str | None) -> str:
    """Return the study a command reads: ``name``, or the storage's only study.

    Raises:
        ConfigError: If ``name`` is not there, or none is given and the storage holds
            several studies (or none).

    """
    import optuna

    names = [
        s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    ]
    if name is not None:
        if name not in names:
            raise ConfigError(
                f"no study named {name!r} in this storage; it has: "
                f"{', '.join(names) or 'no studies'}." + did_you_mean(name, names)
            )
        return name
    if len(names) == 1:
        return names[0]
    raise ConfigError(
        f"the storage holds {len(names)} studies ({', '.join(names) or 'none'}); choose one "
        "with --study-name"
    )


def print_status(storage: Any, only: str | None, *, as_json: bool) -> None:
    """Print the studies of ``storage`` (or only study ``only``): states, best, budget.

    Args:
        storage: An opened storage.
        only: One study's name, or ``None`` for every study.
        as_json: Print the summaries as JSON, for scripts.

    Raises:
        ConfigError: If ``only`` names no study there.
        StorageError: If study ``only`` was deleted while it was read.

    """
    import optuna

    names = [s.study_name for s in optuna.get_all_study_summaries(storage, False)]
    if only is not None:
        names = [pick_study(storage, only)]
    from hpo_trainer.search import facts

    summaries = []
    for name in names:
        try:
            summaries.append(facts.summary(optuna.load_study(study_name=name, storage=storage)))
        except KeyError:  # deleted by someone else since it was listed
            if only is not None:
                raise StorageError(
                    f"study {name!r} was deleted while it was read; run status again"
                ) from None
    if as_json:
        print(json.dumps(summaries, indent=2))
        return
    if not summaries:
        print("no studies in this storage")
    for s in summaries:
        states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(s["states"].items()))
        goal = f"{s['direction']} {s['metric'] or 'value'}"
        if "objectives" in s:
            goal = ", ".join(f"{o['direction']} {o['metric']}" for o in s["objectives"])
        print(f"study {s['study']} ({goal}): {s['trials']} trials: {states or 'none'}")
        if "pareto_front" in s:
            _print_front(s)
        elif "best" in s:
            b = s["best"]
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items())
            print(f"  best: trial {b['trial']}, value {b['value']:.6g}, {params}")
        for r in s["running"]:
            gpu = r["cuda_visible_devices"]
            where = f"worker {r['worker']} on {r['host']}" + (f", GPU {gpu}" if gpu else "")
            print(f"  running: trial {r['trial']} at epoch {r['epoch']} ({where})")
        if s["budget"] is not None:
            done = s["finished"]
            eta = s["eta_seconds"]
            left = f", about {_duration(eta)} left" if eta and done < s["budget"] else ""
            print(f"  budget: {done}/{s['budget']} finished{left}")


def _print_front(s: dict[str, Any]) -> None:
    """Print a multi-objective study's Pareto front, best first by the first objective."""
    names = [o["metric"] for o in s["objectives"]]
    front = s["pareto_front"]
    print(f"  Pareto front: {len(front)} trial(s), by {names[0]} (export takes the first):")
    for t in front:
        values = ", ".join(f"{n} {_fmt(v)}" for n, v in zip(names, t["values"]))
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in t["params"].items())
        print(f"    trial {t['trial']}: {values}; {params}")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
