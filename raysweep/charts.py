"""The report's charts, drawn from plain data frames: training time, final validation loss and accuracy per trial,
overlaid learning curves, a convergence plot per trial, and final accuracy against each searched parameter.

`summary` has one row per trial, in the order the charts list them, with at least `run_id`, `label` and `status`
(plus `epochs` and the plotted metric columns); `history` is long form: `run_id`, `epoch`, `metric`, `value`. Each
chart function returns a matplotlib Figure; raysweep.chart_files saves them all as PNG files. The short number and
name formats live here too, so that the report's labels read as the charts do.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # Figure objects render with Agg and leave pyplot's global state alone
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

PANELS = (("train_loss", "train loss"), ("val_loss", "validation loss"),
          ("train_acc", "train accuracy"), ("val_acc", "validation accuracy"))
# Statuses a reader must notice: their bars are hatched, their lines dashed, their names carry the status.
MARKED_STATUSES = ("diverged", "failed", "interrupted")
STATUS_STYLE = {"completed": ("o", "tab:blue"), "early_stopped": ("s", "tab:orange"),
                "diverged": ("X", "tab:red"), "failed": ("v", "tab:gray"), "interrupted": ("P", "tab:purple")}


# ---------------------------------------------------------------- formats

def normalized(value) -> float | str | None:
    """The value a param stands for, so that "0.001", "1e-3" and 0.001 compare equal; None when unset."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value in ("None", ""):
        return None
    if isinstance(value, bool | np.bool_):
        return str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def format_value(value) -> str:
    """A param value as a label shows it: text as it is, numbers by `short_number`."""
    value = normalized(value)
    return value if isinstance(value, str) else short_number(value)


def short_number(x: float) -> str:
    """64 -> "64", 0.01 -> "0.01", 0.001 -> "1e-3", 0.000316 -> "3.16e-4", 2e6 -> "2e6"."""
    if not math.isfinite(x):
        return str(x)
    if x == int(x) and abs(x) < 1e5:
        return str(int(x))
    if 1e-2 <= abs(x) < 1e5:
        return f"{x:.3g}"
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def safe_name(text: str) -> str:
    """Text as a file name: runs of anything but letters, digits, ".", "_" and "-" become one "_"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "trial"


# ---------------------------------------------------------------- what every chart shares

@dataclass(frozen=True)
class _Look:
    """How each trial is drawn, the same in every chart: its color, its name, whether it is marked."""
    run_ids: list[str]
    labels: list[str]
    names: list[str]  # label, plus the status of a marked trial
    statuses: list[str]
    marked: list[bool]
    colors: list

    @classmethod
    def of(cls, summary: pd.DataFrame) -> _Look:
        n = len(summary)
        cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
        colors = [cmap(i) if n <= 20 else cmap(0.05 + 0.9 * i / max(n - 1, 1)) for i in range(n)]
        statuses = [str(s) for s in summary.status]
        marked = [s in MARKED_STATUSES for s in statuses]
        names = [f"{label} [{s}]" if m else label for label, s, m in zip(summary.label, statuses, marked, strict=True)]
        return cls(list(summary.run_id), list(summary.label), names, statuses, marked, colors)


def _curves(history: pd.DataFrame) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(run_id, metric) -> (epochs, values), values finite or NaN."""
    return {key: (h.epoch.to_numpy(), _finite_or_nan(h.value)) for key, h in history.groupby(["run_id", "metric"])}


def _finite_or_nan(values: pd.Series) -> np.ndarray:
    # Lines break at NaN; inf would wreck autoscaling, so a diverged epoch becomes a gap too.
    values = values.to_numpy(dtype=float)
    return np.where(np.isfinite(values), values, np.nan)


def _spans_decades(values: np.ndarray) -> bool:
    """True when positive values span more than 2 decades, so a log axis shows them all."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return values.size > 1 and bool((values > 0).all()) and values.max() / values.min() > 100

# ---------------------------------------------------------------- the charts

def bar_chart(summary: pd.DataFrame, *, column: str, title: str, xlabel: str) -> Figure:
    """One horizontal bar per trial, first trial on top; marked trials hatched, non-finite values said in words."""
    # Horizontal bars: a trial's label reads left to right however many trials there are.
    look = _Look.of(summary)
    n = len(look.names)
    fig = Figure(figsize=(9, 1.4 + 0.3 * n), layout="constrained")  # 0.3 inch per trial row
    ax = fig.subplots()
    x = summary[column].to_numpy(dtype=float)
    finite = np.isfinite(x)
    bars = ax.barh(np.arange(n), np.where(finite, x, 0.0), color=look.colors, edgecolor="black", linewidth=0.5)
    for bar, marked in zip(bars, look.marked, strict=True):
        if marked:
            bar.set_hatch("///")
    for i in range(n):
        # A non-finite value has no bar; say so at the axis origin instead.
        xy, text = ((x[i], i), f" {short_number(x[i])}") if finite[i] else ((0, i), f" {x[i]} (not finite)")
        ax.annotate(text, xy, xycoords=("data" if finite[i] else "axes fraction", "data"), va="center", fontsize=8)
    if _spans_decades(x):
        ax.set_xscale("log")
    ax.set_yticks(np.arange(n), look.names, fontsize=9)
    ax.set_ylim(n - 0.4, -0.6)  # first trial on top, no empty rows
    ax.margins(x=0.18)
    ax.grid(axis="x", alpha=0.3)
    ax.set(title=title, xlabel=xlabel)
    return fig


def _plot_curve(ax, curve: tuple[np.ndarray, np.ndarray], *, marked: bool, dots: bool = True, **style) -> None:
    epochs, values = curve
    ax.plot(epochs, values, linestyle="--" if marked else "-", marker="." if dots and len(epochs) <= 30 else None,
            **style)
    finite = np.isfinite(values)
    if marked and finite.any():  # where a diverged trial was last seen
        ax.plot(epochs[finite][-1], values[finite][-1], "X", markersize=9, color=style.get("color"))


def _style_axis(ax, *, title: str, ylabel: str, curves: list[np.ndarray]) -> None:
    if "loss" in ylabel and curves and _spans_decades(np.concatenate(curves)):
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)


def learning_curves(summary: pd.DataFrame, history: pd.DataFrame) -> Figure:
    """Train and validation loss and accuracy of every trial, one panel each; marked trials dashed."""
    look, curves = _Look.of(summary), _curves(history)
    columns = math.ceil(len(look.names) / 40)  # at most 40 names per legend column fit beside 8-inch-high plots
    legend_width = columns * (0.8 + 0.065 * max(map(len, look.names)))  # inches; ~0.065 inch per 8-pt character
    fig = Figure(figsize=(11 + legend_width, 8), layout="constrained")
    for ax, (metric, title) in zip(fig.subplots(2, 2).flat, PANELS, strict=True):
        drawn = []
        for run_id, color, marked in zip(look.run_ids, look.colors, look.marked, strict=True):
            if (run_id, metric) in curves:
                _plot_curve(ax, curves[run_id, metric], marked=marked, color=color, linewidth=1.2,
                            dots=len(look.names) <= 10)
                drawn.append(curves[run_id, metric][1])
        _style_axis(ax, title=title, ylabel=metric, curves=drawn)
    handles = [Line2D([], [], color=c, linestyle="--" if m else "-")
               for c, m in zip(look.colors, look.marked, strict=True)]
    fig.legend(handles, look.names, loc="outside right upper", ncols=columns, fontsize=8,
               title="trial (dashed: diverged, failed or\ninterrupted; X: last finite value)", title_fontsize=8)
    return fig


def convergence(summary: pd.DataFrame, history: pd.DataFrame, *, run_id: str) -> Figure:
    """One trial's train and validation loss (left) and accuracy (right) per epoch."""
    look = _Look.of(summary)
    i = look.run_ids.index(run_id)
    curves = _curves(history[history.run_id == run_id])
    fig = Figure(figsize=(11, 4.2))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.84, wspace=0.2)  # fixed: no layout solver
    for ax, kind in zip(fig.subplots(1, 2, sharex=True), ("loss", "acc"), strict=True):
        drawn = []
        for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
            if (run_id, f"{split}_{kind}") in curves:
                curve = curves[run_id, f"{split}_{kind}"]
                _plot_curve(ax, curve, marked=look.marked[i], color=color, label=f"{split}_{kind}")
                drawn.append(curve[1])
        if drawn:
            ax.legend(fontsize=9)
        else:
            ax.text(0.5, 0.5, "no metrics logged", transform=ax.transAxes, ha="center")
        _style_axis(ax, title={"loss": "loss", "acc": "accuracy"}[kind], ylabel=kind, curves=drawn)
    fig.suptitle(f"{look.labels[i]}: {look.statuses[i]} after {summary.epochs.iloc[i]} epochs")
    return fig


def accuracy_versus(summary: pd.DataFrame, values: pd.Series) -> Figure:
    """Each trial's final val_acc against its value of one param (`values`, named after it), marked by status:
    a scatter for numbers (log axis when they span decades), a box per category otherwise."""
    name = str(values.name)
    look = _Look.of(summary)
    y = summary.final_val_acc.to_numpy(dtype=float)
    shown = np.where(np.isfinite(y), y, 0.0)  # a trial without a finite val_acc sits on the floor
    statuses = np.array(look.statuses)
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric:
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.subplots()
        x = values.to_numpy(dtype=float)
        if _spans_decades(x):
            ax.set_xscale("log")
    else:
        texts = np.array([format_value(v) if normalized(v) is not None else "(unset)" for v in values])
        categories = sorted(set(texts))
        fig = Figure(figsize=(max(6.0, 2 + 0.9 * len(categories)), 4.8), layout="constrained")
        ax = fig.subplots()
        groups = [(k, y[(texts == c) & np.isfinite(y)]) for k, c in enumerate(categories)]
        groups = [(k, g) for k, g in groups if g.size]
        if groups:
            ax.boxplot([g for _, g in groups], positions=[k for k, _ in groups], widths=0.5, showfliers=False)
        jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(texts))  # fixed seed: same picture each run
        x = np.array([categories.index(t) for t in texts]) + jitter
        rotate = len(categories) > 6 or max(len(c) for c in categories) > 10
        ax.set_xticks(range(len(categories)), categories, rotation=35 if rotate else 0,
                      ha="right" if rotate else "center")
    for status in dict.fromkeys(statuses):
        rows = (statuses == status) & np.isfinite(x)
        marker, color = STATUS_STYLE.get(status, ("D", "tab:purple"))
        ax.scatter(x[rows], shown[rows], marker=marker, color=color, s=40, alpha=0.8, label=status, zorder=3)
    if not np.isfinite(y).all():
        ax.text(0.01, 0.01, "val_acc not finite: drawn at 0", transform=ax.transAxes, fontsize=8, color="tab:red")
    ax.grid(alpha=0.3)
    ax.legend(title="status", fontsize=8)
    ax.set(title=f"Final validation accuracy vs {name}", xlabel=name, ylabel="final val_acc")
    return fig
