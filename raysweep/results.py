"""After Tuner.fit(): one row per trial, the best trial evaluated on the test split, the results CSV, the MLflow
summary and the report.

Every row is derived from the driver's record of each trial (raysweep.trial_log: why it is the source of truth) by
the rules of raysweep.status, which the MLflow callback applies to the same results. A sweep that finished leaves
outcome.json beside trials.csv: `--resume` of it then changes nothing and only prints its summary again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from raysweep import comparison, report, storage, tracking, train, trainable, trial_log
from raysweep.config import TrialConfig, flatten
from raysweep.mlflow_runs import SweepRun, short_http, trial_label
from raysweep.status import best_of, epoch_of, status_of, stop_reason_of
from raysweep.sweep import Sweep, is_finite_number
from raysweep.trial_log import ExperimentEnd

if TYPE_CHECKING:
    from collections.abc import Callable

    from ray.tune import Result, ResultGrid
    from torch import nn

    from raysweep.data import Dataset

RESULTS_CSV = "trials.csv"
OUTCOME_FILE = "outcome.json"  # written once a sweep has finished every trial
SOUND_STATUSES = ("completed", "early_stopped", "interrupted")  # diverged and failed trials are never the best


@dataclass(frozen=True)
class Outcome:
    """What a sweep came to: what the console summary prints, and what decides the exit code.

    `best` is None when no trial succeeded. Otherwise it holds the best trial's trials.csv row and these keys:
    - label: the trial's readable label, as its MLflow run is named; trial_id; run_id (its MLflow run, or None);
    - metric: the sweep metric (e.g. "val_acc"); best_value: its best over the trial's epochs (mode-aware, as
      status.best_of defines it); best_epoch: the epoch that reached it;
    - test_acc, test_loss: that epoch's checkpoint on the test split; test_epoch: the epoch of the checkpoint
      evaluated (best_epoch, unless that checkpoint was gone);
    - status, stop_reason, epochs (epochs run); config: its settings.
    """

    results_dir: Path
    table: pd.DataFrame  # one row per trial: trials.csv
    best: dict[str, Any] | None
    sweep_run: SweepRun
    missing: list[str] = field(default_factory=list)  # what could not be logged to MLflow
    unchanged: bool = False  # --resume of a sweep that had finished: nothing ran, nothing was rewritten
    comparison: str = ""  # the configurations' table with error bars (raysweep.comparison), for the console


def trial_rows(sweep: Sweep, result_grid: ResultGrid, *, histories: dict[str, trial_log.TrialHistory],
               interrupted: frozenset[str] = frozenset()) -> pd.DataFrame:
    """One row per trial, from its history in the trial log (Tune's when the log lacks it): status, why it stopped,
    epochs, the best value of the sweep metric over its epochs and that epoch, its last metrics and its settings."""
    rows = []
    for result in result_grid:
        # A trial that never reported has no trial_id in its metrics; its folder is <trainable>_<trial id>_<n>_...
        folder = Path(result.path).name
        trial_id = (result.metrics or {}).get("trial_id") or next(
            (t for t in [*interrupted, *histories] if f"_{t}_" in folder), folder)
        history = histories.get(trial_id) or trial_log.TrialHistory()
        results = history.results or _tune_history(result)
        last = results[-1] if results else (result.metrics or {})
        best, best_epoch = best_of(results, metric=sweep.metric, mode=sweep.mode)
        rule = {"max_epochs": sweep.max_epochs, "failed": result.error is not None,
                "interrupted": trial_id in interrupted}
        rows.append({
            "trial_id": trial_id,
            "label": history.label or trial_label(result.config or {}),
            "status": status_of(last, **rule),
            "stop_reason": stop_reason_of(last, **rule),
            "epochs": epoch_of(last),
            f"best_{sweep.metric}": best,
            "best_epoch": best_epoch,
            **{k: last.get(k) for k in ("train_loss", "train_acc", "val_loss", "val_acc")},
            "wall_time_s": last.get("time_total_s"),
            **_span(result),
            **flatten(result.config or {}),
            "path": result.path,
        })
    table = pd.DataFrame(rows)
    if len(table):
        table["best_epoch"] = table["best_epoch"].astype("Int64")  # an int column with gaps: never 3.0
    return table


def _span(result: Result) -> dict[str, float | None]:
    """When the trial started and ended (unix seconds, from Tune's last result): the best-so-far chart's clock."""
    last = result.metrics or {}
    if not isinstance(last.get("timestamp"), int | float) or not isinstance(last.get("time_total_s"), int | float):
        return {"start_s": None, "end_s": None}
    return {"start_s": last["timestamp"] - last["time_total_s"], "end_s": float(last["timestamp"])}


def _tune_history(result: Result) -> list[dict[str, Any]]:
    """Tune's record of a trial's results (result.json in the storage), first report of each epoch."""
    frame = result.metrics_dataframe
    if frame is None or not len(frame):
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for record in frame.to_dict("records"):
        by_epoch.setdefault(epoch_of(record), record)
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def finish(
    sweep: Sweep, *, result_grid: ResultGrid, dataset: Dataset, sweep_run: SweepRun, results_dir: Path,
    experiment_end: ExperimentEnd,
) -> Outcome:
    """Rows, best trial on the test split, CSV, MLflow summary and report; outcome.json once every trial is done."""
    # 1. One row per trial, and the orphan runs a killed driver may have left (before the report reads the runs back).
    histories = trial_log.read(results_dir / trial_log.LOG_FILE)
    table = trial_rows(sweep, result_grid, histories=histories, interrupted=experiment_end.interrupted)
    missing = tracking.abandon_unknown_trial_runs(sweep_run, is_trial=_trial_of(table))
    results_dir.mkdir(parents=True, exist_ok=True)

    # 2. The best trial, evaluated once on the test split and logged with its model.
    best, metrics, tags = None, {}, {}
    row = best_row(table, metric=sweep.metric, mode=sweep.mode)
    if row is not None:
        result = next(r for r in result_grid if r.path == row["path"])
        best_epoch = int(row["best_epoch"])
        model, test, test_epoch = evaluate_on_test(result, dataset=dataset, metric=sweep.metric, mode=sweep.mode,
                                                   epoch=best_epoch)
        table.loc[row.name, ["test_loss", "test_acc"]] = test["test_loss"], test["test_acc"]
        best = {**row.drop("path").to_dict(), **test, "metric": sweep.metric, "best_value": row[f"best_{sweep.metric}"],
                "best_epoch": best_epoch, "test_epoch": test_epoch, "run_id": None, "config": flatten(result.config)}
        metrics = {f"best_{sweep.metric}": best["best_value"], "best_epoch": best_epoch,
                   "best_test_acc": test["test_acc"], "best_test_loss": test["test_loss"]}
        run_id, problem = _log_best(sweep_run, trial_id=row["trial_id"], model=model, test=test, dataset=dataset)
        if run_id:
            tags["raysweep.best_run_id"] = best["run_id"] = run_id
        missing += problem

    # 3. The comparison: each configuration with error bars and paired tests, importance and best so far.
    compared = comparison.write(sweep, table=table, result_grid=result_grid, dataset=dataset,
                                results_dir=results_dir, report_dir=results_dir / "report")
    table = comparison.with_intervals(table, compared)
    metrics |= compared.metrics
    missing += compared.problems

    # 4. The CSV, and the report rebuilt from what MLflow holds.
    csv_path = results_dir / RESULTS_CSV
    table.drop(columns=["path"]).to_csv(csv_path, index=False)
    artifacts = [csv_path, *(p for p in compared.paths if p.parent == results_dir)]
    try:
        with short_http():
            record = report.collect(experiment_name=sweep.name, tracking_uri=sweep_run.tracking_uri,
                                    parent_run_id=sweep_run.run_id)
        report.write_report(record, out_dir=results_dir / "report")
        artifacts.append(results_dir / "report")
    except Exception as exc:
        missing.append(f"comparison report not written: {str(exc).splitlines()[0]}")

    # 5. The sweep run's summary; everything that did not reach MLflow is listed for the user.
    missing = list(experiment_end.unlogged) + missing
    missing += tracking.finish_sweep_run(sweep_run, metrics=metrics, tags=tags, artifact_paths=artifacts)
    if len(table) >= expected_trials(sweep) and not table.status.eq("interrupted").any():
        saved = {"best": best, "sweep_run": vars(sweep_run)}
        (results_dir / OUTCOME_FILE).write_text(json.dumps(saved, default=_json_value))
    return Outcome(results_dir=results_dir, table=table, best=best, sweep_run=sweep_run, missing=missing,
                   comparison=compared.text)


def finished_outcome(results_dir: Path) -> Outcome | None:
    """The outcome of a sweep that finished every trial (from outcome.json and trials.csv), or None."""
    saved_file, csv_path = results_dir / OUTCOME_FILE, results_dir / RESULTS_CSV
    if not (saved_file.is_file() and csv_path.is_file()):
        return None
    saved = json.loads(saved_file.read_text())
    return Outcome(results_dir=results_dir, table=pd.read_csv(csv_path, dtype={"trial_id": str}), best=saved["best"],
                   sweep_run=SweepRun(**saved["sweep_run"]), unchanged=True)


def expected_trials(sweep: Sweep) -> int:
    """How many trials the whole sweep runs: num_samples, or num_samples passes of the grid."""
    from raysweep import space

    return space.grid_size(sweep) * sweep.num_samples if sweep.searcher == "grid" else sweep.num_samples


def _json_value(value: Any) -> Any:
    """numpy and pandas scalars (a row's values) as plain numbers; pandas' missing value as null."""
    if value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else str(value)


def best_row(table: pd.DataFrame, *, metric: str, mode: str) -> pd.Series | None:
    """The row of the best sound trial by its best value of the sweep metric, or None when none has one."""
    if not len(table):
        return None
    score = f"best_{metric}"
    usable = table.status.isin(SOUND_STATUSES) & table[score].map(is_finite_number)
    candidates = table[usable]
    if not len(candidates):
        return None
    return candidates.loc[candidates[score].idxmax() if mode == "max" else candidates[score].idxmin()]


def _log_best(sweep_run: SweepRun, *, trial_id: str, model: nn.Module, test: dict[str, float],
              dataset: Dataset) -> tuple[str | None, list[str]]:
    """Log the best trial's test metrics and model to its run: (its run id or None, what could not be logged)."""
    try:  # short timeouts, no backoff: a tracking server that went away must not stall the end of the sweep
        with short_http():
            run_id = tracking.find_trial_run(sweep_run, trial_id)
            if run_id:
                example, _ = train.to_tensors(dataset, dataset.x_test[:2], dataset.y_test[:2], device="cpu")
                tracking.log_best_trial(sweep_run, child_run_id=run_id, test_metrics=test, model=model,
                                        input_example=example.numpy(),  # normalised images (B, C, H, W)
                                        preprocessing=preprocessing(dataset))
        return run_id, []
    except Exception as exc:  # MLflow down at the end: the CSV still holds every result
        return None, [f"best model and test metrics not logged: {str(exc).splitlines()[0]}"]


def _trial_of(table: pd.DataFrame) -> Callable[[str], bool]:
    """Whether a trial id names one of the table's trials (by its row, or by its folder when it never reported)."""
    ids = set(table.trial_id) if len(table) else set()
    folders = [Path(path).name for path in table.path] if len(table) else []
    return lambda trial_id: trial_id in ids or any(f"_{trial_id}_" in folder for folder in folders)


def preprocessing(dataset: Dataset) -> dict[str, Any]:
    """What a user of the logged model must do to raw images, as train.to_tensors does: the model's MLflow metadata."""
    return {"input": "uint8 images (N, C, H, W) / 255, then (x - mean) / std per channel",
            "mean": list(dataset.mean), "std": list(dataset.std), "classes": list(dataset.classes),
            "dataset": dataset.name}


def evaluate_on_test(result: Result, *, dataset: Dataset, metric: str, mode: str,
                     epoch: int | None) -> tuple[nn.Module, dict[str, float], int | None]:
    """Load the trial's checkpoint of `epoch` (its best) and evaluate it once on the held-out test split (on the
    CPU): (model, test metrics, the epoch of the checkpoint evaluated). Without that checkpoint, Tune's best by the
    same metric and mode stands in, and its epoch says so."""
    config = TrialConfig.from_dict(flatten(result.config))
    checkpoint = storage.checkpoint_of(result, epoch=epoch) or result.get_best_checkpoint(metric, mode)
    checkpoint = checkpoint or result.checkpoint
    metrics = next((m for c, m in result.best_checkpoints if c.path == checkpoint.path), {})
    with checkpoint.as_directory() as folder:
        model = trainable.load_model(folder, config, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    x, y = train.to_tensors(dataset, dataset.x_test, dataset.y_test, device="cpu")
    return model, train.evaluate(model, x, y, prefix="test"), (epoch_of(metrics) if metrics else None)
