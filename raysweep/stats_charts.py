"""The comparison's charts as PNGs: configurations by mean with their confidence intervals and the best marked
(from stats.comparison_table), parameter importance (importance.param_importance), and the best metric so far
against trials and wall time (importance.best_so_far).

Each function returns what it drew, read back from the Axes before saving, so a test (or a caption) sees the chart's
own numbers rather than the inputs it was given.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # Figure objects render with Agg and leave pyplot's global state alone
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:  # importance imports optuna; drawing a chart needs only the curves' frames
    from raysweep.importance import BestSoFar

__all__ = ["Drawn", "best_so_far_chart", "comparison_chart", "importance_chart"]

# The verdict's color in the comparison chart; a configuration with no test (n < 2) gets a hollow point.
VERDICT_STYLE = {"best": ("tab:orange", "best"),
                 "indistinguishable": ("tab:blue", "indistinguishable from the best at 5%"),
                 "different": ("tab:red", "different from the best at 5% (Holm)"),
                 "untested": ("white", "n < 2: no test")}


@dataclass(frozen=True)
class Drawn:
    """A written chart and what it shows, read back from its Axes: column -> values, top to bottom or left to right."""

    path: Path
    data: dict[str, list] = field(default_factory=dict)


def comparison_chart(table: pd.DataFrame, *, path: Path, metric: str = "best_val_acc", mode: str = "max",
                     confidence: float = 0.95) -> Drawn:
    """Each configuration's mean `metric` with its confidence interval, sorted best first (top), the best starred.

    `table` is stats.comparison_table's, made with the same mode and confidence. Colors follow the verdict: the
    best, indistinguishable from it, different from it, or untested. Configurations without a value are left out
    and counted under the axis; one without an interval (n < 2) is a bare point."""
    for column in ("config", f"{metric}_mean", f"{metric}_ci_low", f"{metric}_ci_high"):
        if column not in table.columns:
            raise ValueError(f"comparison_chart: column {column!r} must be in the table, as comparison_table gives")
    shown = table[np.isfinite(table[f"{metric}_mean"].to_numpy(dtype=float))]
    means = shown[f"{metric}_mean"]
    shown = shown.loc[(means if mode == "min" else -means).sort_values(kind="stable").index]
    verdicts = shown.verdict.tolist() if "verdict" in shown else ["best"] + [""] * (len(shown) - 1)
    n = len(shown)
    y = np.arange(n)[::-1]  # the best at the top
    mean = shown[f"{metric}_mean"].to_numpy(dtype=float)
    low = np.nan_to_num(mean - shown[f"{metric}_ci_low"].to_numpy(dtype=float))  # no interval: no bar
    high = np.nan_to_num(shown[f"{metric}_ci_high"].to_numpy(dtype=float) - mean)

    # Labels are long ("sgd l2 dropout=0.49 lr=0.069 ..."): the figure widens with them so the axis keeps its room.
    longest = max((len(str(c)) for c in shown.config), default=0)
    figure = Figure(figsize=(min(max(9.0, 7.0 + 0.1 * longest), 22.0), 1.4 + 0.4 * max(n, 1)), layout="constrained")
    ax = figure.add_subplot()
    kinds = [_kind(v) for v in verdicts]
    colors = [VERDICT_STYLE[k][0] for k in kinds]
    bars = ax.errorbar(mean, y, xerr=[low, high], fmt="none", ecolor="black", elinewidth=1.5, capsize=4)
    dots = ax.scatter(mean, y, c=colors, edgecolors="black", zorder=3)
    best = [i for i, v in enumerate(verdicts) if v == "best"]
    stars = ax.scatter(mean[best], y[best], marker="*", s=260, c=VERDICT_STYLE["best"][0], edgecolors="black",
                       zorder=4, label="best")
    ax.set_yticks(y, [str(c) for c in shown.config])
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_title(f"{metric}: mean and {confidence:.0%} confidence interval over seeds "
                 f"({'higher' if mode == 'max' else 'lower'} is better)")
    left_out = len(table) - n
    ax.set_xlabel(metric + (f"  ({left_out} configuration(s) without a value not shown)" if left_out else ""))
    ax.grid(axis="x", alpha=0.3)
    keys = [ax.scatter([], [], c=VERDICT_STYLE[k][0], edgecolors="black", label=VERDICT_STYLE[k][1])
            for k in ("indistinguishable", "different", "untested") if k in kinds]
    ax.legend(handles=[stars, *keys], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")

    points = sorted((tuple(p) for p in dots.get_offsets()), key=lambda p: -p[1])  # (mean, y), top to bottom
    segments = sorted(bars.lines[2][0].get_segments(), key=lambda s: -s[0][1])  # [[low, y], [high, y]]
    labels = {tick: text.get_text() for tick, text in zip(ax.get_yticks(), ax.get_yticklabels(), strict=True)}
    drawn = {"config": [labels[p[1]] for p in points], "mean": [float(p[0]) for p in points],
             "ci_low": [float(s[:, 0].min()) for s in segments], "ci_high": [float(s[:, 0].max()) for s in segments],
             "best": [labels[y] for _, y in stars.get_offsets()]}
    return Drawn(_save(figure, path), drawn)


def _kind(verdict: str) -> str:
    """stats' verdict text -> its style: best, indistinguishable, different (worse or better), untested."""
    if verdict == "best" or verdict.startswith("indistinguishable"):
        return verdict.split()[0]
    return "different" if verdict.startswith(("worse", "better")) else "untested"


def importance_chart(table: pd.DataFrame, *, path: Path, metric: str = "best_val_acc") -> Drawn:
    """Horizontal bars of importance.param_importance's table, the most important at the top; settings it could not
    assess (NaN) are listed at the bottom as "not assessed"."""
    for column in ("setting", "importance"):
        if column not in table.columns:
            raise ValueError(f"importance_chart: column {column!r} must be in the table, as param_importance gives")
    table = table.sort_values("importance", ascending=False, kind="stable", na_position="last")
    n = len(table)
    figure = Figure(figsize=(7, 1.2 + 0.35 * max(n, 1)), layout="constrained")
    ax = figure.add_subplot()
    y = np.arange(n)[::-1]
    values = table.importance.to_numpy(dtype=float)
    assessed = np.isfinite(values)
    ax.barh(y[assessed], values[assessed], color="tab:blue")
    for yy, value in zip(y, values, strict=True):
        text = f" {value:.2f}" if math.isfinite(value) else " not assessed (not in every trial)"
        ax.text(value if math.isfinite(value) else 0, yy, text, va="center", fontsize="small")
    ax.set_yticks(y, list(table.setting))
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlim(0, max(1e-9, np.nanmax(values, initial=0)) * 1.2)
    ax.set_xlabel(f"importance for {metric} (shares summing to 1)")
    ax.set_title("Which settings explain the metric")
    patches = sorted(ax.patches, key=lambda p: -p.get_y())
    drawn = {"setting": [ax.get_yticklabels()[i].get_text() for i in np.argsort(-ax.get_yticks())],
             "importance": [float(p.get_width()) for p in patches]}
    return Drawn(_save(figure, path), drawn)


def best_so_far_chart(curves: BestSoFar, *, path: Path, metric: str = "best_val_acc") -> Drawn:
    """Two panels: the best metric so far against the number of trials (in start order) and against wall time (as
    trials end), each trial's own value as a faint point."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    drawn: dict[str, list] = {}
    for ax, frame, x, label in ((figure.add_subplot(1, 2, 1), curves.by_trial, "trial", "trials started"),
                                (figure.add_subplot(1, 2, 2), curves.by_time, "time_s", "wall time (s)")):
        ax.scatter(frame[x], frame.value, s=14, color="tab:gray", alpha=0.5, label="trial")
        (line,) = ax.step(frame[x], frame.best, where="post", color="tab:blue", label="best so far")
        ax.set_xlabel(label)
        if x == "trial":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
        drawn[x] = [float(v) for v in line.get_xdata()]
        drawn[f"best_by_{x}"] = [float(v) for v in line.get_ydata()]
    figure.suptitle(f"{metric}: the best so far")
    return Drawn(_save(figure, path), drawn)


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # long labels can defeat constrained layout; the chart is still whole
        warnings.filterwarnings("ignore", message="constrained_layout not applied", category=UserWarning)
        figure.savefig(path, dpi=110)
    return path
