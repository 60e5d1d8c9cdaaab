"""After Tuner.fit(): one row per trial, the best trial evaluated on the test split, the results CSV, the MLflow
summary and report, and what the user reads at the end.
"""

from __future__ import annotations

import contextlib
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pandas as pd

from raysweep import sweep as sweeps

if TYPE_CHECKING:
    from collections.abc import Callable

    from ray.tune import ResultGrid

    from raysweep.data import Dataset
    from raysweep.tracking import SweepRun

RESULTS_CSV = "trials.csv"


@dataclass(frozen=True)
class Outcome:
    results_dir: Path
    table: pd.DataFrame  # one row per trial
    best: dict[str, Any] | None  # the best trial's row, with test_loss / test_acc
    sweep_run: SweepRun
    missing: list[str] = field(default_factory=list)  # what could not be logged to MLflow


def storage_uri(storage: str, name: str) -> str:
    """Where Ray Tune keeps this sweep's runs: an absolute local folder, or a URI such as s3://bucket/path.

    A URI's query stays at the end, where pyarrow and Ray Tune read it: s3://bucket/path?endpoint_override=HOST:PORT
    becomes s3://bucket/path/<name>?endpoint_override=HOST:PORT.
    """
    if "://" in storage:
        uri = urllib.parse.urlsplit(storage)
        return uri._replace(path=f"{uri.path.rstrip('/')}/{name}").geturl()
    return str(Path(storage).expanduser().resolve() / name)


def latest_run(storage_path: str) -> str | None:
    """The newest run folder under the sweep's storage that Ray Tune can restore, or None."""
    import pyarrow.fs
    from ray import tune

    fs, root = pyarrow.fs.FileSystem.from_uri(storage_path)  # reads a URI's query (endpoint_override=...) too
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    names = sorted((i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory), reverse=True)
    return next((n for n in names if tune.Tuner.can_restore(storage_uri(storage_path, n))), None)


def repair_searcher_state(run_path: str, fresh_searcher: Any) -> str | None:
    """Replace a saved searcher state that cannot be read by `fresh_searcher`'s; a warning line, or None.

    Tune copies its snapshot from the driver's staging folder to a local storage folder file by file, in place: a
    driver killed during that copy can leave an empty searcher-state-*.pkl. Tune then logs "Failed to restore the run
    state" and waits forever with nothing to run. A fresh searcher (the sweep's own, unseeded by results) lets the
    restored experiment go on: its finished trials stay, its unfinished ones continue, the trial count is kept (in
    search_gen_state), and only later suggestions lose what the old searcher had learnt. S3 writes whole objects, so
    a remote storage never holds a cut file."""
    import pickle

    if "://" in run_path:
        return None
    saved = sorted(Path(run_path).glob("searcher-state-*.pkl"))  # the newest is the one Tune restores
    if not saved:
        return None
    try:
        with open(saved[-1], "rb") as handle:
            pickle.load(handle)
        return None
    except Exception as exc:
        fresh_searcher.save(str(saved[-1]))
        return (f"the searcher's saved state {saved[-1].name} could not be read ({type(exc).__name__}: the driver was "
                f"killed while saving it); the search goes on with a fresh searcher: every trial is kept, later "
                f"suggestions do not learn from the earlier ones")


def source_tags(sweep_file: Path) -> dict[str, str]:
    """The sweep file and, when it lives in a git checkout, the commit it was run at."""
    tags = {"raysweep.sweep_file": str(sweep_file)}
    folder = sweep_file.resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return tags
    return tags | {"mlflow.source.git.commit": commit, "raysweep.git_dirty": str(bool(dirty)).lower()}


def epoch_of(result: dict[str, Any]) -> int:
    """The epoch a result reports (Tune's training_iteration when it has none: one report per epoch)."""
    return int(result.get("epoch", result.get("training_iteration", 0)))


def status_of(last: dict[str, Any], *, max_epochs: int, failed: bool, interrupted: bool = False) -> str:
    """completed / early_stopped (ours or ASHA's) / diverged / failed / interrupted (the sweep stopped first)."""
    if failed:
        return "failed"
    if interrupted:
        return "interrupted"
    if last.get("diverged"):
        return "diverged"
    if last.get("early_stopped") or epoch_of(last) < max_epochs:
        return "early_stopped"
    return "completed"


def trial_rows(sweep: sweeps.Sweep, grid: ResultGrid, *, interrupted: set[str] = frozenset()) -> pd.DataFrame:
    rows = []
    for result in grid:
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
            **sweeps.flatten(result.config or {}),
            "path": result.path,
        })
    return pd.DataFrame(rows)


def finish(sweep: sweeps.Sweep, *, grid: ResultGrid, dataset: Dataset, sweep_run: SweepRun) -> Outcome:
    """Rows, best trial on the test split, CSV, MLflow summary and report."""
    from raysweep import report, tracking, tracking_callback, train

    table = trial_rows(sweep, grid, interrupted=tracking_callback.interrupted(sweep_run))
    # Before the report reads the child runs back: a killed driver may have left a run of a trial Tune never saved.
    missing = tracking.abandon_unknown_trial_runs(sweep_run, is_trial=_trial_of(table))
    results_dir = _local_results_dir(grid.experiment_path, sweep.name)
    results_dir.mkdir(parents=True, exist_ok=True)
    score = f"best_{sweep.metric}"
    # Diverged and failed trials are never the best, whatever their metric says.
    candidates = table
    if len(table):
        sound = table.status.isin(["completed", "early_stopped", "interrupted"])
        usable = sound & table[score].map(sweeps.is_finite_number)
        candidates = table[usable]
    best = None
    tags: dict[str, str] = {}
    metrics: dict[str, float] = {}
    if len(candidates):
        row = candidates.loc[candidates[score].idxmax() if sweep.mode == "max" else candidates[score].idxmin()]
        result = next(r for r in grid if r.path == row["path"])
        model, test = evaluate_on_test(result, dataset=dataset, metric=sweep.metric, mode=sweep.mode)
        best = {**row.to_dict(), **test, "config": sweeps.flatten(result.config)}
        table.loc[row.name, ["test_loss", "test_acc"]] = test["test_loss"], test["test_acc"]
        metrics = {"best_val_acc": float(row.get("best_val_acc", row["val_acc"])), "best_test_acc": test["test_acc"]}
        try:  # short timeouts, no backoff: a tracking server that went away must not stall the end of the sweep
            with tracking.short_http():
                run_id = tracking.find_trial_run(sweep_run, row["trial_id"])
                if run_id:
                    tags["raysweep.best_run_id"] = run_id
                    best["run_id"] = run_id
                    example, _ = train.to_tensors(dataset, dataset.x_test[:2], dataset.y_test[:2], device="cpu")
                    tracking.log_best_trial(sweep_run, child_run_id=run_id, test_metrics=test, model=model,
                                            input_example=example.numpy(),  # normalised images (B, C, H, W)
                                            preprocessing=preprocessing(dataset))
        except Exception as exc:  # MLflow down at the end: the CSV still holds every result
            missing.append(f"best model and test metrics not logged: {str(exc).splitlines()[0]}")
    csv_path = results_dir / RESULTS_CSV
    table.drop(columns=["path"]).to_csv(csv_path, index=False)
    artifacts = [csv_path]
    try:
        with tracking.short_http():
            collected = report.collect(experiment_name=sweep.name, tracking_uri=sweep_run.tracking_uri,
                                       parent_run_id=sweep_run.run_id)
        report.write_report(collected, out_dir=results_dir / "report")
        artifacts.append(results_dir / "report")
    except Exception as exc:
        missing.append(f"comparison report not written: {str(exc).splitlines()[0]}")
    missing = tracking_callback.unlogged(sweep_run) + missing
    missing += tracking.finish_sweep_run(sweep_run, metrics=metrics, tags=tags, artifact_paths=artifacts)
    return Outcome(results_dir=results_dir, table=table, best=best, sweep_run=sweep_run, missing=missing)


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


def prune_checkpoints(grid: ResultGrid, *, metric: str, mode: str) -> None:
    """Delete every checkpoint but each trial's best (by the sweep metric) and its latest.

    Runs once fit() has returned, after Tune's final experiment state is saved: that state names each trial's latest
    checkpoint, so a later --resume still finds everything it restores from. Storage errors are ignored; a checkpoint
    left behind costs disk, never a result.
    """
    for result in grid:
        if not result.best_checkpoints:  # a trial that never reported, or failed before its first checkpoint
            continue
        keep = {c.path for c in (result.get_best_checkpoint(metric, mode), result.checkpoint) if c is not None}
        for checkpoint, _ in result.best_checkpoints:
            if checkpoint.path not in keep:
                with contextlib.suppress(OSError):
                    checkpoint.filesystem.delete_dir(checkpoint.path)


def evaluate_on_test(result: Any, *, dataset: Dataset, metric: str, mode: str) -> tuple[Any, dict[str, float]]:
    """Load the trial's best checkpoint and evaluate it once on the held-out test split (on the CPU)."""
    from raysweep import train

    config = train.TrialConfig.from_dict(sweeps.flatten(result.config))
    checkpoint = result.get_best_checkpoint(metric, mode) or result.checkpoint
    with checkpoint.as_directory() as folder:
        model = train.load_model(folder, config, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    x, y = train.to_tensors(dataset, dataset.x_test, dataset.y_test, device="cpu")
    return model, train.evaluate(model, x, y, prefix="test")


def _local_results_dir(experiment_path: str, name: str) -> Path:
    """The experiment folder when the storage is local; else results/<sweep>/<run> in the working directory.

    Ray Tune gives a remote experiment's path without its scheme (bucket/path/<sweep>/<run> for S3), and a local
    one as an absolute path (storage_uri resolves it), so a path that is not absolute is remote.
    """
    if "://" not in experiment_path and Path(experiment_path).is_absolute():
        return Path(experiment_path)
    run = PurePosixPath(urllib.parse.urlsplit(experiment_path).path.rstrip("/")).name
    return Path("results").resolve() / name / run


def print_summary(outcome: Outcome, *, seconds: float) -> None:
    table = outcome.table
    counts = table.status.value_counts().to_dict() if len(table) else {}
    print(f"\nraysweep: {len(table)} trial(s) in {seconds:.0f} s: "
          + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    if outcome.best is None:
        print("raysweep: no trial succeeded")
    else:
        best = outcome.best
        print(f"best trial {best['trial_id']}: val_acc={best['val_acc']:.4f} test_acc={best['test_acc']:.4f} "
              f"after {best['epochs']} epoch(s)")
        print("  config: " + ", ".join(f"{k}={v}" for k, v in best["config"].items()))
    print(f"results: {outcome.results_dir / RESULTS_CSV} and {outcome.results_dir / 'report'}/")
    run = outcome.sweep_run
    print(f"MLflow: {run.tracking_uri} experiment id {run.experiment_id}, sweep run {run.run_id}")
    if counts.get("interrupted"):
        print(f"raysweep: interrupted with {counts['interrupted']} trial(s) unfinished: continue them with --resume")
    for line in outcome.missing:
        print(f"warning: {line}")

