"""The comparison report of a sweep, rebuilt from its MLflow record alone.

`collect` reads the sweep's parent run, its trial runs and their metric histories into a `SweepRecord`; `write_report`
writes the summary table and raysweep.charts' charts; `log_report` attaches them to the parent run under report/.
`python -m raysweep.report EXPERIMENT_NAME` does all three. The notebooks read a sweep through `collect` and helpers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient, get_tracking_uri
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from raysweep import chart_files
from raysweep.charts import normalized
from raysweep.labels import label_trials, leaders, numbered  # noqa: F401 (leaders: the notebooks' report.leaders)
from raysweep.mlflow_runs import (
    GIVEN,
    METRICS,
    OPTIONAL_METRICS,
    ROLE,
    STATUS,
    STOP_REASON,
    STOPPED_EPOCH,
    SWEEP_KEY,
    TRIAL_ID,
)
from raysweep.report_paths import StoreNotFound, check_store_exists, results_folder
from raysweep.status import best_of
from raysweep.suggest import did_you_mean

# Logged once per epoch with step = epoch; test_* is logged once, for the best trial only.
EPOCH_METRICS = METRICS + OPTIONAL_METRICS
FINAL_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "recon_loss", "val_recon_loss")


class SweepNotFound(LookupError):
    """The experiment, its sweep run or its trial runs are missing from the MLflow record."""


@dataclass(frozen=True)
class SweepRecord:
    """One execution of a sweep as MLflow recorded it, trials in trial-id order."""

    summary: pd.DataFrame  # one row per trial: ids, label, status, epochs, wall time, final metrics, params
    history: pd.DataFrame  # long form: run_id, label, epoch, metric, value
    searched: tuple[str, ...]  # parameter names the sweep searched over
    experiment_name: str = ""
    parent_run_id: str = ""
    sweep_run: Run | None = None  # the parent run itself: the sweep's settings, its times, its best
    sweep_key: str = ""  # where Ray Tune kept the run (tag raysweep.sweep_key): its results folder derives from it
    sweep_runs: int = 1  # executions of this sweep in the experiment: the report names the one it read

    def param(self, name: str) -> pd.Series:
        """One trial param per trial, typed; NaN where no trial logged it. (A param named like a summary column
        sits under "param.<name>".)"""
        column = f"param.{name}" if f"param.{name}" in self.summary else name
        if column not in self.summary:
            return pd.Series(math.nan, index=self.summary.index, name=name)
        return self.summary[column].rename(name)

    def curves(self) -> pd.DataFrame:
        """The history wide: one row per (label, epoch), one column per metric."""
        return self.history.pivot(index=["label", "epoch"], columns="metric", values="value").sort_index()

    def relabelled(self, names: Sequence[str]) -> SweepRecord:
        """The same record with each trial labelled by its entry of `names` (e.g. the run names), repeats numbered."""
        labels = numbered(names)
        by_run = dict(zip(self.summary.run_id, labels, strict=True))
        return replace(self, summary=self.summary.assign(label=labels),
                       history=self.history.assign(label=self.history.run_id.map(by_run)))


# ---------------------------------------------------------------- reading the record

def collect(*, experiment_name: str, tracking_uri: str | None = None,
            parent_run_id: str | None = None) -> SweepRecord:
    """Read one execution of a sweep (the latest unless `parent_run_id` is given) from MLflow."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None or experiment.lifecycle_stage != "active":
        where = tracking_uri or get_tracking_uri()
        names = [e.name for e in client.search_experiments() if e.name != "Default"]
        hint = did_you_mean(experiment_name, names) or ";"
        listing = f"{hint} experiments there: {', '.join(names)}" if names else "; the store holds no experiment"
        raise SweepNotFound(f"no MLflow experiment named {experiment_name!r} at {where}{listing}")
    parent = _parent_run(client, experiment.experiment_id, experiment_name, parent_run_id)
    pid = parent.info.run_id
    children = _search_all(client, experiment.experiment_id,
                           f"tags.`mlflow.parentRunId` = '{pid}' and tags.`{ROLE}` = 'trial'")
    if not children:
        raise SweepNotFound(f"experiment {experiment_name!r} has no trial runs under its sweep run {pid}")
    children.sort(key=lambda run: (run.data.tags.get(TRIAL_ID, ""), run.info.start_time or 0))

    params = pd.DataFrame([run.data.params for run in children]).apply(_typed)
    searched = _searched(parent.data.params.get("searched"), params)
    named = _given(params, children)
    labels = label_trials(named[[name for name in searched if name in named]] if searched else named)

    history = _history(client, children, labels)
    metric, mode = parent.data.params.get("metric", "val_acc"), parent.data.params.get("mode", "max")
    rows = [_summary_row(run, label, history[history.run_id == run.info.run_id], metric=metric, mode=mode)
            for run, label in zip(children, labels, strict=True)]
    summary = pd.DataFrame(rows)
    summary["stopped_epoch"] = pd.to_numeric(summary["stopped_epoch"], errors="coerce").astype("Int64")
    # A param named like a summary column (e.g. "epochs") keeps its value under "param.<name>".
    params = params.rename(columns={c: f"param.{c}" for c in params.columns if c in summary.columns})
    summary = pd.concat([summary, params], axis=1)
    sweep_runs = len(_search_all(client, experiment.experiment_id, f"tags.`{ROLE}` = 'sweep'"))
    return SweepRecord(summary=summary, history=history.drop(columns="timestamp"), searched=searched,
                       experiment_name=experiment_name, parent_run_id=pid, sweep_run=parent,
                       sweep_key=parent.data.tags.get(SWEEP_KEY, ""), sweep_runs=sweep_runs)


def comparison(record: SweepRecord, *, tracking_uri: str | None = None) -> pd.DataFrame | None:
    """The sweep's comparison as its sweep run holds it (report/comparison.csv, raysweep.stats.comparison_table):
    one row per configuration, best first, with its seeds' n, mean, std and 95% interval of the best metric and of
    test_acc, the paired test against the best and its verdict. None when the run holds none (a search)."""
    from raysweep.comparison import COMPARISON_CSV  # the comparison's file name; its torch imports only when used

    client = MlflowClient(tracking_uri=tracking_uri)
    logged = {artifact.path for artifact in client.list_artifacts(record.parent_run_id, "report")}
    if f"report/{COMPARISON_CSV}" not in logged:
        return None
    with tempfile.TemporaryDirectory() as folder:
        return pd.read_csv(client.download_artifacts(record.parent_run_id, f"report/{COMPARISON_CSV}", folder))


def _parent_run(client: MlflowClient, experiment_id: str, name: str, run_id: str | None):
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException as error:
            raise SweepNotFound(f"no sweep run {run_id!r} in experiment {name!r}") from error
        if run.info.experiment_id != experiment_id:
            raise SweepNotFound(f"run {run_id!r} belongs to experiment id {run.info.experiment_id}, not {name!r}")
        return run
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{ROLE}` = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SweepNotFound(f"experiment {name!r} has no sweep run (tag {ROLE}=sweep), hence no trial runs")
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
    return tuple(c for c in params.columns if len({normalized(v) for v in params[c]}) > 1)


def _given(params: pd.DataFrame, runs: list[Run]) -> pd.DataFrame:
    """The params with each trial's defaults it was not given (tag GIVEN) blanked, so that a label names only what
    the sweep chose for the trial: not an adam trial's rho. A run without the tag (recorded before it) keeps all."""
    given = params.astype(object)
    for row, run in enumerate(runs):
        if (names := run.data.tags.get(GIVEN)) is not None:
            given.iloc[row, ~given.columns.isin(names.split(","))] = None
    return given


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


def _summary_row(run, label: str, history: pd.DataFrame, *, metric: str, mode: str) -> dict:
    series = {m: h.set_index("epoch")["value"] for m, h in history.groupby("metric")}
    empty = pd.Series(dtype=float)
    # recon losses exist only for autoencoder trials; the four core metrics always get a column.
    final = {f"final_{m}": series[m].iloc[-1] if m in series else math.nan
             for m in FINAL_METRICS if m in series or not m.endswith("recon_loss")}
    # The best as the record defines it once (status.best_of: mode-aware, its epoch); why the trial stopped (its tag).
    best, best_epoch = best_of([{"epoch": e, metric: v} for e, v in series.get(metric, empty).items()],
                               metric=metric, mode=mode)
    epoch_time = series.get("epoch_time_s", empty)
    return {
        "run_id": run.info.run_id, "trial_id": run.data.tags.get(TRIAL_ID, ""), "label": label,
        "run_name": run.info.run_name, "status": run.data.tags.get(STATUS, "unknown"),
        "stop_reason": run.data.tags.get(STOP_REASON), f"best_{metric}": best, "best_epoch": best_epoch,
        "epochs": int(history[history.metric.isin(EPOCH_METRICS)].epoch.nunique()),
        "stopped_epoch": run.data.tags.get(STOPPED_EPOCH),
        "wall_time_s": float(epoch_time[np.isfinite(epoch_time)].sum()),
        **final,
        "test_loss": series["test_loss"].iloc[-1] if "test_loss" in series else math.nan,
        "test_acc": series["test_acc"].iloc[-1] if "test_acc" in series else math.nan,
    }


# ---------------------------------------------------------------- writing and logging the report

def write_report(record: SweepRecord, *, out_dir: Path) -> list[Path]:
    """summary.csv and every chart of raysweep.charts into out_dir; returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record.summary.to_csv(out_dir / "summary.csv", index=False)
    logged = [name for name in record.searched if name in record.summary or f"param.{name}" in record.summary]
    params = pd.DataFrame({name: record.param(name) for name in logged}, index=record.summary.index)
    return [out_dir / "summary.csv",
            *chart_files.write_charts(record.summary, record.history, params=params, out_dir=out_dir)]


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
    parser.add_argument("--out", type=Path, default=None, help="default: the report/ folder of the run's results")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to the sweep run")
    args = parser.parse_args(argv)
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or get_tracking_uri()
    try:
        check_store_exists(tracking_uri)  # reading must never create an empty store
        record = collect(experiment_name=args.experiment, tracking_uri=tracking_uri, parent_run_id=args.parent_run_id)
    except (SweepNotFound, StoreNotFound, MlflowException) as error:
        print(f"raysweep.report: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    if record.sweep_runs > 1 and args.parent_run_id is None:
        print(f"reporting sweep run {record.parent_run_id}, the latest of {record.sweep_runs} runs of "
              f"{args.experiment!r} (choose another with --parent-run-id)")
    out_dir = args.out or results_folder(sweep_key=record.sweep_key, experiment_name=args.experiment,
                                         run_id=record.parent_run_id) / "report"
    paths = write_report(record, out_dir=out_dir)
    print(f"wrote {len(paths)} files to {out_dir}")
    if not args.no_log:
        try:
            log_report(paths, tracking_uri=tracking_uri, parent_run_id=record.parent_run_id, out_dir=out_dir)
        except MlflowException as error:
            print(f"raysweep.report: error: logging to run {record.parent_run_id} failed: "
                  f"{str(error).splitlines()[0]}", file=sys.stderr)
            return 2
        print(f"logged them to run {record.parent_run_id} under report/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
