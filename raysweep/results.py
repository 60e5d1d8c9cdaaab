"""After Tuner.fit(): one row per trial, the best trial evaluated on the test split, the results CSV, the MLflow
summary and the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from raysweep import report, tracking, train, trainable
from raysweep.config import TrialConfig, flatten
from raysweep.mlflow_runs import short_http
from raysweep.status import epoch_of, status_of
from raysweep.sweep import Sweep, is_finite_number
from raysweep.tracking_callback import ExperimentEnd

if TYPE_CHECKING:
    from collections.abc import Callable

    from ray.tune import Result, ResultGrid
    from torch import nn

    from raysweep.data import Dataset
    from raysweep.mlflow_runs import SweepRun

RESULTS_CSV = "trials.csv"
SOUND_STATUSES = ("completed", "early_stopped", "interrupted")  # diverged and failed trials are never the best


@dataclass(frozen=True)
class Outcome:
    results_dir: Path
    table: pd.DataFrame  # one row per trial
    best: dict[str, Any] | None  # the best trial's row, with test_loss / test_acc
    sweep_run: SweepRun
    missing: list[str] = field(default_factory=list)  # what could not be logged to MLflow


def trial_rows(sweep: Sweep, result_grid: ResultGrid, *, interrupted: frozenset[str] = frozenset()) -> pd.DataFrame:
    """One row per trial: status, epochs, the best value of the sweep metric over its epochs, its last metrics and
    its settings."""
    rows = []
    for result in result_grid:
        last = result.metrics or {}
        history = result.metrics_dataframe
        scores = history[sweep.metric] if history is not None and sweep.metric in history else pd.Series(dtype=float)
        best = scores.max() if sweep.mode == "max" else scores.min()
        # A trial that never reported has no trial_id in its metrics; its folder is <trainable>_<trial id>_<n>_...
        folder = Path(result.path).name
        trial_id = last.get("trial_id") or next((t for t in interrupted if f"_{t}_" in folder), folder)
        rows.append({
            "trial_id": trial_id,
            "status": status_of(last, max_epochs=sweep.max_epochs, failed=result.error is not None,
                                interrupted=trial_id in interrupted),
            "epochs": epoch_of(last),
            f"best_{sweep.metric}": best,
            **{k: last.get(k) for k in ("train_loss", "train_acc", "val_loss", "val_acc")},
            "wall_time_s": last.get("time_total_s"),
            **flatten(result.config or {}),
            "path": result.path,
        })
    return pd.DataFrame(rows)


def finish(
    sweep: Sweep, *, result_grid: ResultGrid, dataset: Dataset, sweep_run: SweepRun, results_dir: Path,
    experiment_end: ExperimentEnd,
) -> Outcome:
    """Rows, best trial on the test split, CSV, MLflow summary and report."""
    # 1. One row per trial, and the orphan runs a killed driver may have left (before the report reads the runs back).
    table = trial_rows(sweep, result_grid, interrupted=experiment_end.interrupted)
    missing = tracking.abandon_unknown_trial_runs(sweep_run, is_trial=_trial_of(table))
    results_dir.mkdir(parents=True, exist_ok=True)

    # 2. The best trial, evaluated once on the test split and logged with its model.
    best, metrics, tags = None, {}, {}
    row = best_row(table, metric=sweep.metric, mode=sweep.mode)
    if row is not None:
        result = next(r for r in result_grid if r.path == row["path"])
        model, test = evaluate_on_test(result, dataset=dataset, metric=sweep.metric, mode=sweep.mode)
        best = {**row.to_dict(), **test, "config": flatten(result.config)}
        table.loc[row.name, ["test_loss", "test_acc"]] = test["test_loss"], test["test_acc"]
        metrics = {"best_val_acc": float(row.get("best_val_acc", row["val_acc"])), "best_test_acc": test["test_acc"]}
        run_id, problem = _log_best(sweep_run, trial_id=row["trial_id"], model=model, test=test, dataset=dataset)
        if run_id:
            tags["raysweep.best_run_id"] = best["run_id"] = run_id
        missing += problem

    # 3. The CSV, and the report rebuilt from what MLflow holds.
    csv_path = results_dir / RESULTS_CSV
    table.drop(columns=["path"]).to_csv(csv_path, index=False)
    artifacts = [csv_path]
    try:
        with short_http():
            record = report.collect(experiment_name=sweep.name, tracking_uri=sweep_run.tracking_uri,
                                    parent_run_id=sweep_run.run_id)
        report.write_report(record, out_dir=results_dir / "report")
        artifacts.append(results_dir / "report")
    except Exception as exc:
        missing.append(f"comparison report not written: {str(exc).splitlines()[0]}")

    # 4. The sweep run's summary; everything that did not reach MLflow is listed for the user.
    missing = list(experiment_end.unlogged) + missing
    missing += tracking.finish_sweep_run(sweep_run, metrics=metrics, tags=tags, artifact_paths=artifacts)
    return Outcome(results_dir=results_dir, table=table, best=best, sweep_run=sweep_run, missing=missing)


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


def evaluate_on_test(result: Result, *, dataset: Dataset, metric: str, mode: str) -> tuple[nn.Module, dict[str, float]]:
    """Load the trial's best checkpoint and evaluate it once on the held-out test split (on the CPU)."""
    config = TrialConfig.from_dict(flatten(result.config))
    checkpoint = result.get_best_checkpoint(metric, mode) or result.checkpoint
    with checkpoint.as_directory() as folder:
        model = trainable.load_model(folder, config, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    x, y = train.to_tensors(dataset, dataset.x_test, dataset.y_test, device="cpu")
    return model, train.evaluate(model, x, y, prefix="test")
