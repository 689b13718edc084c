"""The anytime curves of ``bench_quality`` as one self-contained SVG: a column per family,
best validation loss so far (median over seeds, log scale) against cumulative epochs (top row)
and wall seconds (bottom row), a line per variant."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

COLORS = (
    "#d62728",
    "#1f77b4",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
W, H, PAD = 230, 180, 34
GRID = 60


def median_curve(runs: Sequence[dict[str, Any]], axis: int, xmax: float) -> list[tuple]:
    """(x, median best so far) on a grid of ``GRID`` x values, where every seed has a value."""
    out = []
    for i in range(1, GRID + 1):
        x = xmax * i / GRID
        ys = [min((p[2] for p in r["points"] if p[axis] <= x), default=math.inf) for r in runs]
        if all(math.isfinite(y) and y > 0 for y in ys):
            out.append((x, statistics.median(ys)))
    return out


def _panel(
    x0: float,
    y0: float,
    curves: dict[str, list[tuple]],
    xmax: float,
    title: str,
    colors: dict[str, str],
) -> list[str]:
    ys = [y for c in curves.values() for _, y in c]
    if not ys:
        return []
    # The first trials' losses would flatten the rest: the top is where the curves stand a
    # quarter of the way in (higher values are drawn at the top edge).
    quarter = [c[min(len(c) - 1, GRID // 4)][1] for c in curves.values() if c]
    lo, hi = math.log10(min(ys)), math.log10(max(quarter))
    hi = hi if hi > lo else lo + 1e-3

    def px(x: float, y: float) -> str:
        fx = x0 + PAD + (W - PAD - 6) * x / xmax
        fy = y0 + 16 + (H - 40) * (1 - min(1.0, (math.log10(y) - lo) / (hi - lo)))
        return f"{fx:.1f},{fy:.1f}"

    parts = [
        f'<rect x="{x0 + PAD}" y="{y0 + 16}" width="{W - PAD - 6}" height="{H - 40}" '
        'fill="none" stroke="#bbb"/>',
        f'<text x="{x0 + W / 2}" y="{y0 + 11}" text-anchor="middle">{escape(title)}</text>',
        f'<text x="{x0 + PAD}" y="{y0 + H - 12}">0</text>',
        f'<text x="{x0 + W - 6}" y="{y0 + H - 12}" text-anchor="end">{xmax:.0f}</text>',
        f'<text x="{x0 + PAD - 2}" y="{y0 + 24}" text-anchor="end">{10**hi:.3g}</text>',
        f'<text x="{x0 + PAD - 2}" y="{y0 + H - 24}" text-anchor="end">{10**lo:.3g}</text>',
    ]
    for name, c in curves.items():
        if c:
            pts = " ".join(px(x, y) for x, y in c)
            parts.append(
                f'<polyline points="{pts}" fill="none" stroke="{colors[name]}" '
                'stroke-width="1.5"/>'
            )
    return parts


def write_svg(path: Path, records: list[dict[str, Any]], variants: list[str]) -> None:
    """Write the curves of ``records`` (as ``bench_quality.run_one`` returns them)."""
    families = list(dict.fromkeys(r["family"] for r in records))
    colors = {v: COLORS[i % len(COLORS)] for i, v in enumerate(variants)}
    body = []
    for col, family in enumerate(families):
        runs = {
            v: [r for r in records if r["family"] == family and r["variant"] == v]
            for v in variants
        }
        for row, (axis, label) in enumerate(((0, "epochs"), (1, "wall s"))):
            xmax = (
                max(
                    (p[axis] for rs in runs.values() for r in rs for p in r["points"]), default=1.0
                )
                or 1.0
            )
            curves = {v: median_curve(rs, axis, xmax) for v, rs in runs.items() if rs}
            body += _panel(col * W, row * H, curves, xmax, f"{family}: vs {label}", colors)
    legend_y = 2 * H + 14
    for i, v in enumerate(variants):
        x = 10 + i * 170
        body.append(
            f'<line x1="{x}" y1="{legend_y}" x2="{x + 20}" y2="{legend_y}" '
            f'stroke="{colors[v]}" stroke-width="3"/>'
        )
        body.append(f'<text x="{x + 24}" y="{legend_y + 4}">{escape(v)}</text>')
    width, height = max(len(families), 1) * W, 2 * H + 26
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="10"><rect width="100%" height="100%" '
        f'fill="white"/>{"".join(body)}</svg>\n'
    )
    path.write_text(svg)
