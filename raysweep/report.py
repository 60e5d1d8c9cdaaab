"""The comparison report of a sweep, rebuilt from its MLflow record alone.

`collect` reads the sweep's parent run, its trial runs and their metric histories; `write_report` writes the
summary table and the charts; `log_report` attaches them to the parent run under report/.
`python -m raysweep.report EXPERIMENT_NAME` does all three.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # Figure objects render with Agg and leave pyplot's global state alone
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from mlflow import MlflowClient, get_tracking_uri
from mlflow.exceptions import MlflowException

ROLE_TAG, STATUS_TAG, STOPPED_TAG, TRIAL_ID_TAG = (
    "raysweep.role", "raysweep.status", "raysweep.stopped_epoch", "raysweep.trial_id")
# Logged once per epoch with step = epoch; test_* is logged once, for the best trial only.
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s", "recon_loss",
                 "val_recon_loss")
FINAL_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "recon_loss", "val_recon_loss")
# Categorical choices that name a trial by themselves, so their value leads its label without a key.
LEAD_PARAMS = ("optimizer", "regularizer")
# Statuses a reader must notice: their bars are hatched, their lines dashed, their names carry the status.
MARKED_STATUSES = ("diverged", "failed")
STATUS_STYLE = {"completed": ("o", "tab:blue"), "early_stopped": ("s", "tab:orange"),
                "diverged": ("X", "tab:red"), "failed": ("v", "tab:gray")}


class SweepNotFound(LookupError):
    """The experiment, its sweep run or its trial runs are missing from the MLflow record."""


@dataclass(frozen=True)
class SweepData:
    """One execution of a sweep as MLflow recorded it, trials in trial-id order."""

    summary: pd.DataFrame  # one row per trial: ids, label, status, epochs, wall time, final metrics, params
    history: pd.DataFrame  # long form: run_id, label, epoch, metric, value
    searched: tuple[str, ...]  # parameter names the sweep searched over
    experiment_name: str = ""
    parent_run_id: str = ""


# ---------------------------------------------------------------- reading the record

def collect(*, experiment_name: str, tracking_uri: str | None = None,
            parent_run_id: str | None = None) -> SweepData:
    """Read one execution of a sweep (the latest unless `parent_run_id` is given) from MLflow."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None or experiment.lifecycle_stage != "active":
        where = tracking_uri or get_tracking_uri()
        raise SweepNotFound(f"no MLflow experiment named {experiment_name!r} at {where}")
    parent = _parent_run(client, experiment.experiment_id, experiment_name, parent_run_id)
    pid = parent.info.run_id
    children = _search_all(client, experiment.experiment_id,
                           f"tags.`mlflow.parentRunId` = '{pid}' and tags.`{ROLE_TAG}` = 'trial'")
    if not children:
        raise SweepNotFound(f"experiment {experiment_name!r} has no trial runs under its sweep run {pid}")
    children.sort(key=lambda run: (run.data.tags.get(TRIAL_ID_TAG, ""), run.info.start_time or 0))

    params = pd.DataFrame([run.data.params for run in children]).apply(_typed)
    searched = _searched(parent.data.params.get("searched"), params)
    labels = label_trials(params[[name for name in searched if name in params]] if searched else params)

    history = _history(client, children, labels)
    rows = [_summary_row(run, label, history[history.run_id == run.info.run_id])
            for run, label in zip(children, labels, strict=True)]
    summary = pd.DataFrame(rows)
    summary["stopped_epoch"] = pd.to_numeric(summary["stopped_epoch"], errors="coerce").astype("Int64")
    # A param named like a summary column (e.g. "epochs") keeps its value under "param.<name>".
    params = params.rename(columns={c: f"param.{c}" for c in params.columns if c in summary.columns})
    summary = pd.concat([summary, params], axis=1)
    return SweepData(summary=summary, history=history.drop(columns="timestamp"), searched=searched,
                     experiment_name=experiment_name, parent_run_id=pid)


def _parent_run(client: MlflowClient, experiment_id: str, name: str, run_id: str | None):
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException as error:
            raise SweepNotFound(f"no sweep run {run_id!r} in experiment {name!r}") from error
        if run.info.experiment_id != experiment_id:
            raise SweepNotFound(f"run {run_id!r} belongs to experiment id {run.info.experiment_id}, not {name!r}")
        return run
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SweepNotFound(f"experiment {name!r} has no sweep run (tag {ROLE_TAG}=sweep), hence no trial runs")
    return runs[0]


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _typed(column: pd.Series) -> pd.Series:
    """MLflow keeps params as strings: numbers come back as numbers, "None" as missing."""
    column = column.where(~column.isin(["None", ""]))
    try:
        return pd.to_numeric(column)
    except (ValueError, TypeError):
        return column


def _searched(logged: str | None, params: pd.DataFrame) -> tuple[str, ...]:
    try:
        names = json.loads(logged) if logged else None
    except json.JSONDecodeError:
        names = None
    if isinstance(names, list) and names:
        return tuple(str(name) for name in names)
    return tuple(c for c in params.columns if len({_normalized(v) for v in params[c]}) > 1)


def _history(client: MlflowClient, runs: list, labels: list[str]) -> pd.DataFrame:
    rows = [(run.info.run_id, label, metric.step, key, _from_mlflow(metric.value), metric.timestamp)
            for run, label in zip(runs, labels, strict=True) for key in sorted(run.data.metrics)
            for metric in client.get_metric_history(run.info.run_id, key)]
    history = pd.DataFrame(rows, columns=["run_id", "label", "epoch", "metric", "value", "timestamp"])
    # A resumed trial may log an epoch twice; the later value is the one it continued from.
    history = history.sort_values("timestamp", kind="stable")
    history = history.drop_duplicates(["run_id", "epoch", "metric"], keep="last")
    return history.sort_values(["run_id", "metric", "epoch"], kind="stable").reset_index(drop=True)


def _from_mlflow(value: float) -> float:
    # MLflow's SQL stores keep +/-inf as +/-max float; read them back as the inf a trial logged.
    return math.copysign(math.inf, value) if abs(value) >= sys.float_info.max else value


def _summary_row(run, label: str, history: pd.DataFrame) -> dict:
    series = {m: h.set_index("epoch")["value"] for m, h in history.groupby("metric")}
    empty = pd.Series(dtype=float)
    # recon losses exist only for autoencoder trials; the four core metrics always get a column.
    final = {f"final_{m}": series[m].iloc[-1] if m in series else math.nan
             for m in FINAL_METRICS if m in series or not m.endswith("recon_loss")}
    val_acc = series.get("val_acc", empty)
    epoch_time = series.get("epoch_time_s", empty)
    return {
        "run_id": run.info.run_id, "trial_id": run.data.tags.get(TRIAL_ID_TAG, ""), "label": label,
        "run_name": run.info.run_name, "status": run.data.tags.get(STATUS_TAG, "unknown"),
        "epochs": int(history[history.metric.isin(EPOCH_METRICS)].epoch.nunique()),
        "stopped_epoch": run.data.tags.get(STOPPED_TAG),
        "wall_time_s": float(epoch_time[np.isfinite(epoch_time)].sum()),
        **final,
        "best_val_acc": float(val_acc[np.isfinite(val_acc)].max()) if np.isfinite(val_acc).any() else math.nan,
        "test_loss": series["test_loss"].iloc[-1] if "test_loss" in series else math.nan,
        "test_acc": series["test_acc"].iloc[-1] if "test_acc" in series else math.nan,
    }


# ---------------------------------------------------------------- labels

def label_trials(params: pd.DataFrame) -> list[str]:
    """One short, unique label per row, built from the parameters that vary across rows."""
    varying = [c for c in params.columns if len({_normalized(v) for v in params[c]}) > 1]
    # With nothing varying (a single trial), the optimizer and regularizer still say what it was.
    leads = [c for c in LEAD_PARAMS if c in (varying or params.columns)]
    keyed = [c for c in varying if c not in leads]
    short = [c.rsplit(".", 1)[-1] for c in keyed]
    # "optimizer.momentum" reads as "momentum" unless two varying params would then share a key.
    keys = [s if short.count(s) == 1 and s not in LEAD_PARAMS else c for s, c in zip(short, keyed, strict=True)]
    labels: list[str] = []
    for _, row in params.iterrows():
        parts = [_format(row[c]) for c in leads if _normalized(row[c]) is not None]
        parts += [f"{k}={_format(row[c])}" for k, c in zip(keys, keyed, strict=True) if _normalized(row[c]) is not None]
        label = base = " ".join(parts) or "trial"
        repeat = 1
        while label in labels:  # same params (a repeated grid point): "adam", "adam #2", "adam #3"
            repeat += 1
            label = f"{base} #{repeat}"
        labels.append(label)
    return labels


def _normalized(value) -> float | str | None:
    """The value a param stands for, so that "0.001", "1e-3" and 0.001 compare equal; None when unset."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value in ("None", ""):
        return None
    if isinstance(value, bool | np.bool_):
        return str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _format(value) -> str:
    value = _normalized(value)
    return value if isinstance(value, str) else _short_number(value)


def _short_number(x: float) -> str:
    """64 -> "64", 0.01 -> "0.01", 0.001 -> "1e-3", 0.000316 -> "3.16e-4", 2e6 -> "2e6"."""
    if not math.isfinite(x):
        return str(x)
    if x == int(x) and abs(x) < 1e5:
        return str(int(x))
    if 1e-2 <= abs(x) < 1e5:
        return f"{x:.3g}"
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "trial"


# ---------------------------------------------------------------- charts

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
               title="trial (dashed: diverged or failed,\nX: its last finite value)", title_fontsize=8)
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

def log_report(paths: Sequence[Path], *, tracking_uri: str | None, parent_run_id: str,
               out_dir: Path | None = None) -> None:
    """Log the files as artifacts of the sweep's parent run under report/, keeping their folders below out_dir."""
    if not paths:
        return
    client = MlflowClient(tracking_uri=tracking_uri)
    root = Path(out_dir) if out_dir else Path(os.path.commonpath([Path(p).parent for p in paths]))
    for path in map(Path, paths):
        folder = path.parent.relative_to(root).as_posix()
        client.log_artifact(parent_run_id, str(path), artifact_path="report" if folder == "." else f"report/{folder}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raysweep.report", allow_abbrev=False,
                                     description="Rebuild a sweep's comparison report from MLflow alone.")
    parser.add_argument("experiment", metavar="EXPERIMENT_NAME", help="MLflow experiment = the sweep's name")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else MLflow's own")
    parser.add_argument("--parent-run-id", default=None, help="sweep run to report (default: the latest)")
    parser.add_argument("--out", type=Path, default=None, help="default: ./results/<experiment>/report")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to the sweep run")
    args = parser.parse_args(argv)
    out_dir = args.out or Path("results") / _safe_name(args.experiment) / "report"
    try:
        data = collect(experiment_name=args.experiment, tracking_uri=args.tracking_uri,
                       parent_run_id=args.parent_run_id)
    except (SweepNotFound, MlflowException) as error:
        print(f"raysweep.report: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    paths = write_report(data, out_dir=out_dir)
    print(f"wrote {len(paths)} files to {out_dir}")
    if not args.no_log:
        try:
            log_report(paths, tracking_uri=args.tracking_uri, parent_run_id=data.parent_run_id, out_dir=out_dir)
        except MlflowException as error:
            print(f"raysweep.report: error: logging to run {data.parent_run_id} failed: "
                  f"{str(error).splitlines()[0]}", file=sys.stderr)
            return 2
        print(f"logged them to run {data.parent_run_id} under report/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
