"""The comparison report: is this configuration better than that one, with error bars.

Written after fit() into the run's report folder (and so logged to the sweep run):
- for every comparison sweep (a list of `trials`) and every sweep with repeats >= 2: seeds.csv (one row per
  configuration and seed), comparison.csv and comparison.png (each configuration's mean and 95% Student-t interval of
  its best validation value and its test accuracy, with n, and a paired t-test against the best by seed with Holm's
  correction: raysweep.stats), and a compact table for the console;
- for search sweeps with enough finished trials: parameter importance (Optuna's fANOVA, raysweep.importance) as
  importance.csv / importance.png and metrics `importance.<setting>` on the sweep run, and the best so far against
  trials and wall time (best_so_far.png).

A seed's best value is the best of the sweep metric over that seed's own epochs. Its test accuracy is that seed's
model in the configuration's best checkpoint (by the mean over seeds), evaluated once on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from raysweep import importance, stats, stats_charts, train, trainable
from raysweep.config import TrialConfig, flatten
from raysweep.device_data import Normalize, shared_tensors
from raysweep.sweep import Sweep, varied_names

if TYPE_CHECKING:
    from ray.tune import Result, ResultGrid

    from raysweep.data import Dataset

SEEDS_CSV = "seeds.csv"
COMPARISON_CSV, COMPARISON_PNG = "comparison.csv", "comparison.png"
IMPORTANCE_CSV, IMPORTANCE_PNG, BEST_SO_FAR_PNG = "importance.csv", "importance.png", "best_so_far.png"


@dataclass
class Comparison:
    """What the comparison wrote: files, the console's table, and metrics for the sweep run."""

    paths: list[Path] = field(default_factory=list)
    text: str = ""  # stats.format_table's lines, for the console summary ("" when there is no comparison)
    metrics: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # one line per part that could not be made
    table: pd.DataFrame | None = None  # stats.comparison_table's, with each configuration's trial_id


def wanted(sweep: Sweep) -> bool:
    """A comparison sweep, or repeated seeds: the configurations are the thing being compared."""
    return bool(sweep.trials) or sweep.repeats >= 2


def label(sweep: Sweep, config: dict[str, Any]) -> str:
    """A configuration by what varies across the sweep, e.g. "optimizer=adam batch_size=32"."""
    flat = flatten(config)
    return " ".join(f"{name}={flat[name]}" for name in varied_names(sweep) if name in flat) or "all"


def seed_curves(result: Result, *, metric: str) -> dict[int, pd.Series]:
    """Each seed's per-epoch `metric` of one trial: seed -> values by epoch (one seed without repeats)."""
    history = result.metrics_dataframe
    if history is None or history.empty:
        return {}
    prefix = f"{trainable.SEED_METRICS}/"
    columns = {int(c.split("/")[1]): c for c in history.columns if c.startswith(prefix) and c.endswith(f"/{metric}")}
    if not columns:  # repeats = 1: the trial is its own one seed
        seed = int(flatten(result.config or {}).get("seed", 0))
        return {seed: history[metric]} if metric in history else {}
    return {seed: history[column] for seed, column in sorted(columns.items())}


def seed_rows(sweep: Sweep, table: pd.DataFrame, result_grid: ResultGrid,
              test: dict[str, dict[int, float]]) -> pd.DataFrame:
    """One row per (configuration, seed): label, trial_id, status, seed, best_<metric>, best_epoch, test_acc."""
    score, pick = f"best_{sweep.metric}", (np.nanargmax if sweep.mode == "max" else np.nanargmin)
    by_path = {result.path: result for result in result_grid}
    rows = []
    for _, trial in table.iterrows():
        result = by_path[trial["path"]]
        for seed, curve in seed_curves(result, metric=sweep.metric).items():
            values = pd.to_numeric(curve, errors="coerce").to_numpy(dtype=float)
            finite = np.isfinite(values)
            best_at = int(pick(np.where(finite, values, np.nan))) if finite.any() else None
            rows.append({
                "config": trial["label"] if isinstance(trial.get("label"), str) else label(sweep, result.config or {}),
                "trial_id": trial["trial_id"],
                "status": trial["status"], "seed": seed,
                score: values[best_at] if best_at is not None else np.nan,
                "best_epoch": best_at + 1 if best_at is not None else None,
                "epochs": len(values),
                "test_acc": test.get(trial["trial_id"], {}).get(seed, np.nan),
            })
    return pd.DataFrame(rows)


def evaluate_seeds(result: Result, *, dataset: Dataset, sweep: Sweep) -> dict[int, float]:
    """Each seed's model in the trial's best checkpoint, evaluated once on the test split: seed -> test_acc."""
    checkpoint = result.get_best_checkpoint(sweep.metric, sweep.mode) or result.checkpoint
    if checkpoint is None:
        return {}
    config = TrialConfig.from_dict(flatten(result.config))
    x, y = shared_tensors(dataset.x_test, dataset.y_test, device="cpu")  # uint8, normalised batch by batch
    normalize = Normalize.of(dataset, device="cpu")
    accuracies = {}
    with checkpoint.as_directory() as folder:
        for index in range(sweep.repeats):
            model = trainable.load_model(folder, config, input_shape=dataset.input_shape,
                                         num_classes=dataset.num_classes, seed_index=index)
            test = train.evaluate(model, x, y, prefix="test", normalize=normalize)
            accuracies[config.seed + index] = test["test_acc"]
    return accuracies


def write(sweep: Sweep, *, table: pd.DataFrame, result_grid: ResultGrid, dataset: Dataset, results_dir: Path,
          report_dir: Path) -> Comparison:
    """Everything the comparison report holds for this sweep; each part that fails is a problem line, not an error."""
    out = Comparison()
    report_dir.mkdir(parents=True, exist_ok=True)
    score = f"best_{sweep.metric}"
    if wanted(sweep) and len(table):
        try:
            sound = table[table.status.isin(("completed", "early_stopped"))]
            by_path = {result.path: result for result in result_grid}
            test = {row.trial_id: evaluate_seeds(by_path[row.path], dataset=dataset, sweep=sweep)
                    for row in sound.itertuples()}
            seeds = seed_rows(sweep, table, result_grid, test)
            seeds.to_csv(results_dir / SEEDS_CSV, index=False)
            seeds["config"] = _unique_labels(seeds)
            compared = stats.comparison_table(seeds, metric=score, mode=sweep.mode)
            compared["trial_id"] = compared.config.map(dict(zip(seeds.config, seeds.trial_id, strict=True)))
            out.table = compared
            compared.to_csv(report_dir / COMPARISON_CSV, index=False)
            stats_charts.comparison_chart(compared, path=report_dir / COMPARISON_PNG, metric=score, mode=sweep.mode)
            out.paths += [results_dir / SEEDS_CSV, report_dir / COMPARISON_CSV, report_dir / COMPARISON_PNG]
            out.text = stats.format_table(compared, width=44)
        except Exception as exc:
            out.problems.append(f"comparison table not written: {_first_line(exc)}")
    if sweep.space and not sweep.trials:
        _search_report(sweep, table, report_dir, out)
    return out


def with_intervals(table: pd.DataFrame, compared: Comparison) -> pd.DataFrame:
    """trials.csv's rows with each configuration's n, mean, std and 95% interval of its seeds' best values (and of
    their test accuracy), from the comparison table; the table unchanged when there was no comparison."""
    if compared.table is None or not len(table):
        return table
    columns = [c for c in compared.table.columns if c.endswith(("_n", "_mean", "_std", "_ci_low", "_ci_high"))]
    by_trial = compared.table.set_index("trial_id")[columns]
    extra = by_trial.reindex(table.trial_id).reset_index(drop=True)
    score = next((c[: -len("_n")] for c in columns if c.endswith("_n") and c.startswith("best_")), None)
    out = pd.concat([table.reset_index(drop=True), extra], axis=1)
    return out.rename(columns={f"{score}_n": "n"}) if score else out


def _search_report(sweep: Sweep, table: pd.DataFrame, report_dir: Path, out: Comparison) -> None:
    """Importance and best-so-far for a search; skipped (not a problem) below importance.MIN_TRIALS trials."""
    score = f"best_{sweep.metric}"
    finished = table[pd.to_numeric(table[score], errors="coerce").notna()] if len(table) else table
    if len(finished) < importance.MIN_TRIALS:
        return
    try:
        ranked = importance.param_importance(finished, space=sweep.space, metric=score, mode=sweep.mode,
                                             seed=sweep.seed)
        ranked.to_csv(report_dir / IMPORTANCE_CSV, index=False)
        stats_charts.importance_chart(ranked, path=report_dir / IMPORTANCE_PNG, metric=score)
        out.paths += [report_dir / IMPORTANCE_CSV, report_dir / IMPORTANCE_PNG]
        out.metrics |= {f"importance.{row.setting}": float(row.importance) for row in ranked.itertuples()
                        if np.isfinite(row.importance)}
    except Exception as exc:
        out.problems.append(f"parameter importance not written: {_first_line(exc)}")
    try:
        timed = table[pd.to_numeric(table["start_s"], errors="coerce").notna()]  # a trial that never reported: no clock
        curves = importance.best_so_far(timed, metric=score, mode=sweep.mode, start="start_s", end="end_s")
        stats_charts.best_so_far_chart(curves, path=report_dir / BEST_SO_FAR_PNG, metric=score)
        out.paths.append(report_dir / BEST_SO_FAR_PNG)
    except Exception as exc:
        out.problems.append(f"best-so-far chart not written: {_first_line(exc)}")


def _unique_labels(seeds: pd.DataFrame) -> pd.Series:
    """Each row's configuration label, with the trial id added where two trials share a label."""
    per_trial = seeds.drop_duplicates("trial_id").set_index("trial_id").config
    shared = per_trial[per_trial.duplicated(keep=False)].index
    return seeds.apply(lambda r: f"{r.config} ({r.trial_id})" if r.trial_id in shared else r.config, axis=1)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
