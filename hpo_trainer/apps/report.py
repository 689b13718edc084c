"""One self-contained HTML report of a study, made of Optuna's own plots."""

from __future__ import annotations

import functools
import html
import logging
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import optuna

from hpo_trainer.base.errors import ConfigError
from hpo_trainer.base.files import check_output_path, write_output
from hpo_trainer.search import facts

logger = logging.getLogger(__name__)


def _plots(study: optuna.Study) -> list[tuple[str, Callable[[optuna.Study], Any]]]:
    from optuna import visualization as vis

    plots = [
        ("Optimization history", vis.plot_optimization_history),
        ("Intermediate values (per epoch)", vis.plot_intermediate_values),
        ("Parallel coordinates", vis.plot_parallel_coordinate),
        ("Parameter importances", vis.plot_param_importances),
        ("Slices", vis.plot_slice),
    ]
    if not facts.is_multi(study):
        return plots
    # Several objectives: the Pareto front, then the other plots of the first objective.
    names = [n for n, _ in facts.objectives(study)]
    first = {"target": lambda t: t.values[0], "target_name": names[0]}
    return [
        ("Pareto front", functools.partial(vis.plot_pareto_front, target_names=names)),
        *(
            (heading, plot)  # of the objective reported per epoch
            if heading.startswith("Intermediate")
            else (f"{heading} of {names[0]}", functools.partial(plot, **first))
            for heading, plot in plots
        ),
    ]


def _heading(study: optuna.Study) -> list[str]:
    """Return the report's opening: trials, direction(s), the best trial or the front."""
    goals = facts.objectives(study)
    if len(goals) == 1:
        parts = [f"<p>{len(study.trials)} trials, direction {goals[0][1]}"]
        best = facts.best(study)
        if best is None:
            return [*parts, "</p>"]
        params = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
            for k, v in best.params.items()
        )
        return [
            *parts,
            f"; best value {best.value:.6g} (trial {best.number})</p>",
            f"<table>{params}</table>",
        ]
    front = facts.pareto_front(study)
    names = "".join(f"<th>{html.escape(f'{n} ({d})')}</th>" for n, d in goals)
    rows = "".join(
        f"<tr><td>{t.number}</td>"
        + "".join(f"<td>{v:.6g}</td>" for v in t.values)
        + f"<td>{html.escape(', '.join(f'{k}={v}' for k, v in t.params.items()))}</td></tr>"
        for t in front
    )
    return [
        f"<p>{len(study.trials)} trials, {len(goals)} objectives; the Pareto front has "
        f"{len(front)} trials:</p>",
        f"<table><tr><th>trial</th>{names}<th>params</th></tr>{rows}</table>",
    ]


#: The suffixes of the file a report is written to.
SUFFIXES = (".html", ".htm")


def write_report(
    study: optuna.Study,
    path: str | os.PathLike[str],
    *,
    reads: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Write the study's plots into one HTML file that works offline.

    Plotly's JavaScript is embedded once, so the file needs no network. A plot that cannot
    be drawn (e.g. importances with a single parameter) is replaced by a note saying why.

    Args:
        study: The study to report on.
        path: The file to write; it must end in ``.html`` (or ``.htm``).
        reads: The files the report reads (the study's storage file, its study file):
            ``path`` may be none of them.

    Returns:
        The path written.

    Raises:
        ConfigError: If plotly is missing, the study has no finished trial, or ``path`` does
            not end in ``.html``, is a directory, a file in ``reads`` or a SQLite database,
            or cannot be written; nothing is written then.

    """
    reads = tuple(reads)  # checked twice: now, and again when the file is written
    # Before the plots are drawn: a bad path fails at once.
    check_output_path(path, "report.html", reads=reads, suffixes=SUFFIXES)
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise ConfigError("the report needs plotly: pip install plotly") from None
    if not facts.finished(study.get_trials(deepcopy=False)):
        raise ConfigError(
            f"study {study.study_name!r} has no finished trial to report on yet; run the search"
        )
    title = f"Study {study.study_name}"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *_heading(study),
    ]
    include_js: Any = True
    for heading, plot in _plots(study):
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        try:
            with warnings.catch_warnings():  # PED-ANOVA on a target: it reads low as good
                warnings.filterwarnings("ignore", "PedAnovaImportanceEvaluator", UserWarning)
                figure = plot(study)
            parts.append(figure.to_html(full_html=False, include_plotlyjs=include_js))
            include_js = False
        except Exception as exc:  # a plot that does not apply to this study
            logger.info("report: no %s plot (%s)", heading, exc)
            parts.append(f"<p><em>not available: {html.escape(str(exc))}</em></p>")
    parts.append("</body></html>")
    return write_output("\n".join(parts), path, "report.html", reads=reads, suffixes=SUFFIXES)
