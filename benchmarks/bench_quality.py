"""Search quality per unit of compute: ``hpo-trainer search`` against two hand-written
baselines on five task families (``quality_tasks.py``), several seeds each.

Every run is one whole command on a fresh SQLite study: ``hpo-trainer search`` (its default,
or a ``--sampler``/``--pruner`` candidate), the hand-written Optuna script (TPE,
``MedianPruner(5, 3)``) or random search with asynchronous successive halving
(``quality_baselines.py``). From each study's trials it records the anytime curve: the best
validation loss so far against cumulative epochs and against wall time. It writes
``runs.jsonl``, ``table.md`` and ``curves.svg`` into the run folder, prints the table and
checks the issue's targets on the default, family by family (medians over seeds):

- best: the default's best loss is at most both baselines';
- epochs: it reaches the script's final best in at most 0.5x the script's epochs;
- wall: the whole command takes at most 0.8x the script's wall time;

each met on at least 4 of the 5 families.

Run: .venv/bin/python benchmarks/bench_quality.py [--quick] [--only FAMILY] [--seeds N]
     [--candidates SAMPLER/PRUNER,...] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _shared as sh  # noqa: E402
import quality_plot  # noqa: E402
from quality_tasks import FAMILIES  # noqa: E402

BIN = Path(sys.executable).parent
BASELINES = ("optuna-script", "random-asha")
TARGETS = {"best": 1.0, "epochs": 0.5, "wall": 0.8}  # default / baseline, at most
FAMILIES_NEEDED = 4
#: full, quick: trials, epochs, seeds
SIZES = {False: (40, 20, 5), True: (6, 3, 1)}


def _command(variant: str, family: str, seed: int, folder: Path, args: argparse.Namespace):
    """The command line of one run, and the storage URL its study is in."""
    url = f"sqlite:///{folder / 'study.db'}"
    if variant in BASELINES:
        kind = "optuna" if variant == "optuna-script" else "asha"
        script = str(HERE / "quality_baselines.py")
        sizes = (args.trials, args.workers, args.epochs, seed)
        return [sys.executable, script, "main", kind, url, "study", family, *map(str, sizes)], url
    cmd = [str(BIN / "hpo-trainer"), "-q", "search", str(HERE / "quality_tasks.py")]
    cmd += ["-o", f"family={family}", "--study-name", "study", "--storage", url]
    cmd += ["--runs-dir", str(folder), "--trials", str(args.trials), "--epochs", str(args.epochs)]
    cmd += ["--workers", str(args.workers), "--seed", str(seed)]
    if variant != "default":
        sampler, _, pruner = variant.partition("/")
        cmd += ["--sampler", sampler] * bool(sampler) + ["--pruner", pruner] * bool(pruner)
    return cmd, url


def run_one(variant: str, family: str, seed: int, scratch: Path, args: argparse.Namespace):
    """Run one search as a whole command; return its record with the anytime curve."""
    folder = Path(tempfile.mkdtemp(prefix=f"{family}-{variant.replace('/', '_')}-", dir=scratch))
    cmd, url = _command(variant, family, seed, folder, args)
    env = {**os.environ, "HPO_QUALITY_DATA": str(scratch)}
    began, t0 = datetime.datetime.now(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        print(
            f"  warning: {family} {variant} seed {seed} exited {proc.returncode}: "
            f"{proc.stderr.strip()[-300:]}"
        )
    trials = sh.read_trials(url, "study")
    return {
        "family": family,
        "variant": variant,
        "seed": seed,
        "wall": wall,
        "exit": proc.returncode,
        **anytime(trials, began),
    }


def anytime(trials: Sequence[Any], began: datetime.datetime) -> dict[str, Any]:
    """The anytime curve of a study's finished trials, in the order they finished: points of
    (cumulative epochs, seconds since ``began``, best completed value so far)."""
    from optuna.trial import TrialState

    done = [t for t in trials if t.state.is_finished() and t.datetime_complete is not None]
    done.sort(key=lambda t: t.datetime_complete)
    epochs, best, points = 0, math.inf, []
    for t in done:
        epochs += len(t.intermediate_values)
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
            best = min(best, t.value)
        points.append((epochs, (t.datetime_complete - began).total_seconds(), best))
    states = [t.state.name for t in done]
    return {
        "epochs": epochs,
        "best": best,
        "points": points,
        "trials": len(done),
        "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
    }


def epochs_to_reach(points: Sequence[Sequence[float]], value: float) -> float:
    """Cumulative epochs at which the curve first reaches ``value``; inf if it never does."""
    return next((p[0] for p in points if p[2] <= value), math.inf)


def summarise(records: list[dict[str, Any]], variants: list[str]) -> dict[str, dict[str, Any]]:
    """Per family and variant: medians over seeds, and ratios to the hand-written script."""
    out: dict[str, dict[str, Any]] = {}
    for family in dict.fromkeys(r["family"] for r in records):
        rows = {
            v: [r for r in records if r["family"] == family and r["variant"] == v]
            for v in variants
        }
        script = {r["seed"]: r for r in rows["optuna-script"]}
        out[family] = {}
        for v, runs in rows.items():
            to_script = [
                sh.ratio(
                    epochs_to_reach(r["points"], script[r["seed"]]["best"]),
                    script[r["seed"]]["epochs"],
                )
                for r in runs
                if r["seed"] in script
            ]
            out[family][v] = {
                "best": sh.median(r["best"] for r in runs),
                "epochs": sh.median(r["epochs"] for r in runs),
                "wall": sh.median(r["wall"] for r in runs),
                "to_script": sh.median(to_script) if to_script else math.nan,
                "wall_ratio": sh.median(
                    sh.ratio(r["wall"], script[r["seed"]]["wall"])
                    for r in runs
                    if r["seed"] in script
                ),
                "pruned": sh.median(r["pruned"] for r in runs),
                "seeds": len(runs),
            }
    return out


def table(summary: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Rows of the quality table: a family's variants, best loss relative to the script's."""
    headers = [
        "family",
        "variant",
        "best val loss",
        "x script",
        "epochs",
        "epochs to script's",
        "pruned",
        "wall s",
        "wall x script",
    ]
    rows = []
    for family, variants in summary.items():
        base = variants["optuna-script"]["best"]
        for v, s in variants.items():
            rows.append(
                [
                    family,
                    v,
                    f"{s['best']:.4g}",
                    sh.fmt(sh.ratio(s["best"], base), ".3f"),
                    f"{s['epochs']:.0f}",
                    sh.fmt(s["to_script"], ".2f"),
                    f"{s['pruned']:.0f}",
                    f"{s['wall']:.1f}",
                    sh.fmt(s["wall_ratio"], ".2f"),
                ]
            )
    return headers, rows


def targets(summary: dict[str, dict[str, Any]], variant: str = "default") -> list[str]:
    """RESULT lines: on how many families ``variant`` meets each target."""
    met = {"best": [], "epochs": [], "wall": []}
    for family, variants in summary.items():
        s = variants[variant]
        if s["best"] <= min(variants[b]["best"] for b in BASELINES):
            met["best"].append(family)
        if s["to_script"] <= TARGETS["epochs"]:
            met["epochs"].append(family)
        if s["wall_ratio"] <= TARGETS["wall"]:
            met["wall"].append(family)
    need = min(FAMILIES_NEEDED, len(summary))
    what = {
        "best": "best loss <= both baselines'",
        "epochs": f"reaches the script's best in <= {TARGETS['epochs']}x its epochs",
        "wall": f"wall time <= {TARGETS['wall']}x the script's",
    }
    return [
        sh.result(
            f"{variant}_{k}_families",
            len(met[k]),
            "d",
            f"{what[k]} on >= {need} families; met on: {', '.join(met[k]) or 'none'}",
            len(met[k]) >= need,
        )
        for k in met
    ]


def write_table(path: Path, headers: list[str], rows: list[list[str]], note: str) -> None:
    """The table as Markdown."""
    lines = [f"| {' | '.join(headers)} |", "|" + "---|" * len(headers)]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    path.write_text(note + "\n\n" + "\n".join(lines) + "\n")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, one seed: a smoke test")
    p.add_argument("--only", action="append", choices=FAMILIES, metavar="FAMILY")
    p.add_argument("--seeds", type=int, help="seeds per family (default 5; quick 1)")
    p.add_argument("--trials", type=int, help="trials per search (default 40; quick 6)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default 20; quick 3)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--candidates", default="", help="SAMPLER/PRUNER,... also to compare")
    p.add_argument("--out", type=Path, help="run folder (default runs/bench_quality/<time>)")
    p.add_argument(
        "--report",
        type=Path,
        metavar="RUNS_JSONL",
        help="run nothing: report the runs of an earlier run folder's runs.jsonl",
    )
    args = p.parse_args(argv)
    trials, epochs, seeds = SIZES[args.quick]
    args.trials, args.epochs = args.trials or trials, args.epochs or epochs
    args.seeds = args.seeds or seeds
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out = args.out or Path("runs") / "bench_quality" / stamp
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every family, seed and variant (in rotating order), then report."""
    args = parse(argv)
    families = list(dict.fromkeys(args.only or FAMILIES))
    variants = ["default", *BASELINES, *filter(None, args.candidates.split(","))]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report is not None:
        records = [json.loads(line) for line in args.report.read_text().splitlines()]
        records = [r for r in records if r["family"] in families]
        seen = list(dict.fromkeys(r["variant"] for r in records))
        return report(
            records,
            [v for v in variants if v in seen] + [v for v in seen if v not in variants],
            args.out,
            0.0,
        )
    print(
        f"bench_quality: {', '.join(families)}; {args.seeds} seeds; {args.trials} trials x "
        f"{args.epochs} epochs, {args.workers} workers; variants {', '.join(variants)}"
    )
    records, started = [], time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="bench_quality_") as scratch,
        (args.out / "runs.jsonl").open("a") as log,
    ):
        for family in families:
            for seed in range(args.seeds):
                k = seed % len(variants)
                for variant in variants[k:] + variants[:k]:
                    record = run_one(variant, family, seed, Path(scratch), args)
                    records.append(record)
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    print(
                        f"  {family} seed {seed} {variant}: best {record['best']:.4g}, "
                        f"{record['epochs']} epochs, {record['wall']:.1f} s",
                        flush=True,
                    )
    return report(records, variants, args.out, time.perf_counter() - started)


def report(records: list[dict[str, Any]], variants: list[str], out: Path, took: float) -> int:
    """Print and write the table, the plot and the RESULT lines."""
    summary = summarise(records, variants)
    headers, rows = table(summary)
    note = (
        f"Medians over {max(r['seed'] for r in records) + 1} seeds; 'x script': relative to "
        "the hand-written Optuna script (TPE, MedianPruner(5, 3)); 'epochs to script's': "
        "epochs to reach the script's final best, over the script's epochs (inf: never)."
    )
    sh.print_table("search quality per family (" + note + ")", headers, rows)
    write_table(out / "table.md", headers, rows, note)
    quality_plot.write_svg(out / "curves.svg", records, variants)
    results = targets(summary)
    print(f"\nbench_quality done in {took:.0f} s; table, curves and runs in {out}")
    print("\n".join(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
