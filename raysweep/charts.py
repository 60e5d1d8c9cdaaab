"""The report's charts: training time, final validation loss and accuracy per trial, overlaid learning curves, a
convergence plot per trial, and final accuracy against each searched parameter. `write_report` writes them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # Figure objects render with Agg and leave pyplot's global state alone
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from raysweep.report import (
    MARKED_STATUSES,
    STATUS_STYLE,
    SweepData,
    _format,
    _normalized,
    _safe_name,
    _short_number,
)

PANELS = (("train_loss", "train loss"), ("val_loss", "validation loss"),
          ("train_acc", "train accuracy"), ("val_acc", "validation accuracy"))


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


def write_report(data: SweepData, *, out_dir: Path) -> list[Path]:
    """Write summary.csv and every chart under `out_dir`; returns the written paths."""
    out_dir = Path(out_dir)
    (out_dir / "convergence").mkdir(parents=True, exist_ok=True)
    summary, look = data.summary, _Look.of(data.summary)
    curves = {key: (h.epoch.to_numpy(), _finite_or_nan(h.value)) for key, h in
              data.history.groupby(["run_id", "metric"])}
    summary.to_csv(out_dir / "summary.csv", index=False)
    paths = [out_dir / "summary.csv",
             _bars(look, summary.wall_time_s, out_dir / "training_time.png",
                   title="Training time per trial", xlabel="wall time (s, sum of epoch times)"),
             _bars(look, summary.final_val_loss, out_dir / "final_val_loss.png",
                   title="Final validation loss per trial (lower is better)", xlabel="val_loss at last epoch"),
             _bars(look, summary.final_val_acc, out_dir / "final_val_acc.png",
                   title="Final validation accuracy per trial (higher is better)", xlabel="val_acc at last epoch"),
             _learning_curves(look, curves, out_dir / "learning_curves.png"),
             *_convergence(look, summary, curves, out_dir / "convergence")]
    for name in data.searched:
        column = f"param.{name}" if f"param.{name}" in summary else name
        if column in summary:
            paths.append(_versus(look, summary[column], summary.final_val_acc, name=name,
                                 path=out_dir / f"final_val_acc_vs_{_safe_name(name)}.png"))
    return paths


def _finite_or_nan(values: pd.Series) -> np.ndarray:
    # Lines break at NaN; inf would wreck autoscaling, so a diverged epoch becomes a gap too.
    values = values.to_numpy(dtype=float)
    return np.where(np.isfinite(values), values, np.nan)


def _spans_decades(values: np.ndarray) -> bool:
    """True when positive values span more than 2 decades, so a log axis shows them all."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return values.size > 1 and bool((values > 0).all()) and values.max() / values.min() > 100


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return path


def _bars(look: _Look, values: pd.Series, path: Path, *, title: str, xlabel: str) -> Path:
    # Horizontal bars: a trial's label reads left to right however many trials there are.
    n = len(look.names)
    fig = Figure(figsize=(9, 1.4 + 0.3 * n), layout="constrained")  # 0.3 inch per trial row
    ax = fig.subplots()
    x = values.to_numpy(dtype=float)
    finite = np.isfinite(x)
    bars = ax.barh(np.arange(n), np.where(finite, x, 0.0), color=look.colors, edgecolor="black", linewidth=0.5)
    for bar, marked in zip(bars, look.marked, strict=True):
        if marked:
            bar.set_hatch("///")
    for i in range(n):
        # A non-finite value has no bar; say so at the axis origin instead.
        xy, text = ((x[i], i), f" {_short_number(x[i])}") if finite[i] else ((0, i), f" {x[i]} (not finite)")
        ax.annotate(text, xy, xycoords=("data" if finite[i] else "axes fraction", "data"), va="center", fontsize=8)
    if _spans_decades(x):
        ax.set_xscale("log")
    ax.set_yticks(np.arange(n), look.names, fontsize=9)
    ax.set_ylim(n - 0.4, -0.6)  # first trial on top, no empty rows
    ax.margins(x=0.18)
    ax.grid(axis="x", alpha=0.3)
    ax.set(title=title, xlabel=xlabel)
    return _save(fig, path)


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


def _learning_curves(look: _Look, curves: dict, path: Path) -> Path:
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
    return _save(fig, path)


def _convergence(look: _Look, summary: pd.DataFrame, curves: dict, folder: Path) -> list[Path]:
    paths, used = [], set()
    for i, run_id in enumerate(look.run_ids):
        name = _safe_name(look.labels[i])
        name = name if name not in used else f"{name}_{i}"  # "a b" and "a_b" would share a file
        used.add(name)
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
        paths.append(_save(fig, folder / f"{name}.png"))
    return paths


def _versus(look: _Look, values: pd.Series, accuracy: pd.Series, *, name: str, path: Path) -> Path:
    y = accuracy.to_numpy(dtype=float)
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
        texts = np.array([_format(v) if _normalized(v) is not None else "(unset)" for v in values])
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
    return _save(fig, path)


# ---------------------------------------------------------------- MLflow artifacts and the command line

