"""A trial read back from MLflow alone: its settings (params parsed back into a TrialConfig), its val_acc per epoch,
and the sweep run above it, which holds the data split and the per-trial resources.

A configuration trained with several seeds has one child run per seed (raysweep.role=seed); each seed run's params
lie over its configuration's, so a seed run that records only its `seed` still gives the whole config.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raysweep.config import ConfigError, TrialConfig
from raysweep.mlflow_runs import PARENT, ROLE, one_line, search_runs

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

METRIC = "val_acc"
SPLIT_DEFAULTS = {"val_size": None, "val_pick": "first", "subset": None, "seed": 0, "cpu": 1, "gpu": 0}  # Sweep's


class RecordError(Exception):
    """The record cannot give a trial back: an unknown run, a run that is not a trial, params that are no config."""


@dataclass(frozen=True)
class Record:
    """One trained model as MLflow holds it: its run, its settings and its val_acc per epoch."""

    run_id: str
    label: str  # how the output names it: the run's name, and its seed for a seed run
    config: TrialConfig
    history: dict[int, float]  # epoch -> val_acc


def parse_param(text: str) -> Any:
    """A param logged as str(value) -> the value: a Python literal where it parses as one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def recorded_history(client: MlflowClient, run_id: str, *, key: str = METRIC) -> dict[int, float]:
    """epoch -> the metric's value. MLflow keeps every value ever logged for a step; the latest (largest timestamp)
    counts, as a correction logged later supersedes what it corrects. A tie keeps the one the store lists last."""
    latest: dict[int, tuple[int, float]] = {}
    for metric in client.get_metric_history(run_id, key):
        if metric.step not in latest or metric.timestamp >= latest[metric.step][0]:
            latest[metric.step] = (metric.timestamp, metric.value)
    return {step: value for step, (_, value) in sorted(latest.items())}


def get_run(client: MlflowClient, run_id: str, *, what: str) -> Run:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise RecordError(f"{what} {run_id!r} is not in the MLflow store {client.tracking_uri} "
                          f"({one_line(exc, limit=120)})") from None


def _config(params: dict[str, str], *, run_id: str) -> TrialConfig:
    """The trial's settings. A field the params lack takes TrialConfig's default, which is what the trial used."""
    try:
        return TrialConfig.from_dict({key: parse_param(text) for key, text in params.items()})
    except ConfigError as exc:
        raise RecordError(f"run {run_id}: its params are not a trial's settings: {exc}") from None


def _record(client: MlflowClient, run: Run, *, params: dict[str, str]) -> Record:
    config = _config(params, run_id=run.info.run_id)
    history = recorded_history(client, run.info.run_id)
    if not history:
        raise RecordError(f"run {run.info.run_id} records no `{METRIC}` metric: there is nothing to compare with")
    label = run.info.run_name or run.info.run_id
    if run.data.tags.get(ROLE) == "seed":
        label = f"seed {config.seed}: {label}"
    return Record(run.info.run_id, label, config, history)


def find_records(client: MlflowClient, run_id: str) -> tuple[Run, list[Record]]:
    """The sweep run above `run_id` and what to retrain: the trial, each seed of a configuration, or one seed run."""
    run = get_run(client, run_id, what="run id")
    role = run.data.tags.get(ROLE)
    if role not in ("trial", "seed"):
        raise RecordError(f"run {run_id} must be a trial or seed run (tag {ROLE}=trial or seed), "
                             f"but it has {ROLE}={role}")
    params = dict(run.data.params)
    if role == "seed":  # a seed run's own params (at least its seed) lie over its configuration's
        parent_id = run.data.tags.get(PARENT, "")
        configuration = get_run(client, parent_id, what=f"the configuration run of seed run {run_id}")
        records = [_record(client, run, params={**configuration.data.params, **params})]
        return _sweep_run(client, configuration), records
    query = f"tags.`{PARENT}` = '{run_id}' AND tags.`{ROLE}` = 'seed'"
    seeds = search_runs(client, run.info.experiment_id, query)
    if not seeds:
        return _sweep_run(client, run), [_record(client, run, params=params)]
    records = [_record(client, seed, params={**params, **seed.data.params}) for seed in seeds]
    return _sweep_run(client, run), sorted(records, key=lambda r: r.config.seed)


def _sweep_run(client: MlflowClient, trial: Run) -> Run:
    parent_id = trial.data.tags.get(PARENT)
    if not parent_id:
        raise RecordError(f"run {trial.info.run_id} has no parent run (tag {PARENT}): its sweep run holds the data")
    parent = get_run(client, parent_id, what=f"the sweep run of {trial.info.run_id}")
    if parent.data.tags.get(ROLE) != "sweep":
        raise RecordError(f"run {parent_id}, the parent of {trial.info.run_id}, must be a sweep run "
                             f"({ROLE}=sweep), but it has {ROLE}={parent.data.tags.get(ROLE)}")
    return parent


def split_of(sweep_run: Run) -> tuple[dict[str, Any], list[str]]:
    """The sweep run's data split and resources, and one note per value it did not record (Sweep's default used)."""
    params = sweep_run.data.params
    if "dataset" not in params:
        raise RecordError(f"sweep run {sweep_run.info.run_id} records no `dataset` param: the data is unknown")
    split = {"dataset": params["dataset"]}
    notes = []
    for key, default in SPLIT_DEFAULTS.items():
        if key in params:
            split[key] = parse_param(params[key])
        else:
            split[key] = default
            notes.append(f"the sweep run does not record `{key}`; using the Sweep default {key}={default!r}")
    if "gpu_per_trial" in params:  # the GPU share each trial got (`gpu` may be "auto")
        split["gpu_per_trial"] = parse_param(params["gpu_per_trial"])
    return split, notes


