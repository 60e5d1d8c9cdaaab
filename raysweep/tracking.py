"""The sweep's parent run in MLflow: opened before fit(), closed after it with the summary, the best trial's model
and the report (or by raysweep.failures when the sweep fails). raysweep.tracking_callback.MlflowTrialCallback turns
Ray Tune's trial events into the child runs.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from raysweep.mlflow_runs import (
    ABANDONED,
    ROLE,
    SWEEP_KEY,
    TRIAL_ID,
    SweepRun,
    child_runs,
    end_run,
    find_trial_run_id,
    fluent_tracking_uri,
    local_artifacts,
    one_line,
    param_value,
    search_runs,
    short_http,
)
from raysweep.sweep import Sweep, domain_text, varied_names

if TYPE_CHECKING:
    import numpy
    import torch

    from raysweep.data import Dataset

def sweep_params(sweep: Sweep, *, dataset: Dataset) -> dict[str, str]:
    """What the parent run records as params: the space, the searcher and scheduler, the budget, and the data split
    (data set, val_size, val_pick, subset, seed, the sizes and a sha256 of the data read) that rebuilds any trial."""
    params = {f"space.{key}": domain_text(domain) for key, domain in sweep.space.items()}
    params |= {f"fixed.{key}": repr(value) for key, value in sweep.fixed.items()}
    keys = ("dataset", "searcher", "scheduler", "grace_period", "reduction_factor", "metric", "mode", "num_samples",
            "max_epochs", "max_concurrent", "cpu", "gpu", "seed", "repeats", "subset", "val_size", "val_pick")
    params |= {key: str(getattr(sweep, key)) for key in keys}
    params["searched"] = json.dumps(varied_names(sweep))
    if sweep.trials:
        params["trials"] = json.dumps(list(sweep.trials), default=str)[:6000]  # MLflow caps a param's length
    params["data.sha256"] = dataset.sha256
    params |= {f"data.{split}": str(len(getattr(dataset, f"y_{split}"))) for split in ("train", "val", "test")}
    return params


def runtime_tags() -> dict[str, str]:
    """Versions of what ran, and the Ray cluster's size when Ray is up."""
    import ray
    import torch

    import raysweep

    tags = {
        "raysweep.version.raysweep": raysweep.__version__,
        "raysweep.version.ray": ray.__version__,
        "raysweep.version.torch": torch.__version__,
        "raysweep.version.mlflow": mlflow.__version__,
        "raysweep.version.python": platform.python_version(),
    }
    if ray.is_initialized():
        resources = ray.cluster_resources()
        tags["raysweep.cluster.nodes"] = str(sum(1 for node in ray.nodes() if node.get("Alive")))
        tags["raysweep.cluster.cpus"] = f"{resources.get('CPU', 0):g}"
        tags["raysweep.cluster.gpus"] = f"{resources.get('GPU', 0):g}"
    return tags


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


def start_sweep_run(
    *,
    tracking_uri: str,
    experiment_name: str,
    sweep_key: str,
    params: dict[str, Any],
    tags: dict[str, str],
    artifacts: dict[str, str],
    resume: bool,
) -> SweepRun:
    """Open the parent run (with resume=True: reopen the latest one of this sweep_key, if any).

    artifacts maps an artifact file name to its text. On a reopened run, params it already has keep
    their first value (MLflow params are immutable)."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        experiment_id = client.create_experiment(experiment_name, artifact_location=local_artifacts(tracking_uri))
    else:
        experiment_id = experiment.experiment_id
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
    all_tags = {**runtime_tags(), **tags, ROLE: "sweep", SWEEP_KEY: sweep_key}
    query = f"tags.`{ROLE}` = 'sweep' AND tags.`{SWEEP_KEY}` = '{sweep_key}'"
    previous = search_runs(client, experiment_id, query) if resume else []
    if previous:
        run_id = previous[0].info.run_id  # search_runs lists the newest first
        client.update_run(run_id, status="RUNNING")
        logged = previous[0].data.params
    else:
        run_name = f"{experiment_name} {time.strftime('%Y-%m-%d %H:%M:%S')}"
        run_id = client.create_run(experiment_id, run_name=run_name).info.run_id
        logged = {}
    new_params = [Param(k, param_value(v)) for k, v in params.items() if k not in logged]
    for start in range(0, len(new_params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=new_params[start : start + 100])
    run_tags = [RunTag(k, str(v)) for k, v in all_tags.items()]
    for start in range(0, len(run_tags), 100):
        client.log_batch(run_id, tags=run_tags[start : start + 100])
    for name, text in artifacts.items():
        client.log_text(run_id, text, artifact_file=name)
    return SweepRun(tracking_uri=tracking_uri, experiment_id=experiment_id, run_id=run_id)


def find_trial_run(sweep_run: SweepRun, trial_id: str) -> str | None:
    """The child run id of a trial, found by its raysweep.trial_id tag, or None."""
    return find_trial_run_id(MlflowClient(sweep_run.tracking_uri), sweep_run, trial_id)


def abandon_unknown_trial_runs(sweep_run: SweepRun, *, is_trial: Callable[[str], bool]) -> list[str]:
    """Delete (MLflow's soft delete) the child runs of trials that Tune's experiment does not hold.

    A driver killed between opening a trial's run and Tune's next save of its experiment state leaves such a run: the
    resumed experiment never knew the trial, and its searcher proposes another in its place. Each run is tagged
    raysweep.status=abandoned and ended KILLED first, so `mlflow runs restore` shows why it went. Returns one line
    per failure; never raises for MLflow errors."""
    client, failures = MlflowClient(sweep_run.tracking_uri), []
    for child in child_runs(client, sweep_run, status=None, on_error=failures):
        if child.data.tags.get(ROLE) != "trial" or is_trial(child.data.tags.get(TRIAL_ID, "")):
            continue
        try:
            with short_http():
                end_run(client, child.info.run_id, status=ABANDONED)
                client.delete_run(child.info.run_id)
        except Exception as exc:
            failures.append(f"orphan trial run {child.info.run_id} not deleted: {one_line(exc)}")
    return failures


def finish_sweep_run(
    sweep_run: SweepRun,
    *,
    metrics: dict[str, float],
    tags: dict[str, str],
    artifact_paths: list[Path],
    status: str = "FINISHED",
) -> list[str]:
    """Log the summary, close child runs left RUNNING (KILLED, status tag failed), end the parent.

    Returns one line per thing that could not be logged; never raises for MLflow errors."""
    client, run_id, failures = MlflowClient(sweep_run.tracking_uri), sweep_run.run_id, []

    def attempt(what: str, action) -> None:
        try:
            with short_http():
                action()
        except Exception as exc:
            failures.append(f"{what} not logged: {one_line(exc)}")

    now_ms = int(time.time() * 1000)
    metric_list = [Metric(k, float(v), now_ms, 0) for k, v in metrics.items()]
    attempt(f"sweep metrics {sorted(metrics)}", lambda: client.log_batch(run_id, metrics=metric_list))
    tag_list = [RunTag(k, str(v)) for k, v in tags.items()]
    attempt(f"sweep tags {sorted(tags)}", lambda: client.log_batch(run_id, tags=tag_list))
    for path in artifact_paths:
        # A folder (the report) keeps its name: its files land under report/, not at the run's root.
        name = Path(path).name if Path(path).is_dir() else None
        log = client.log_artifacts if Path(path).is_dir() else client.log_artifact
        attempt(f"artifact {path}", lambda log=log, path=path, name=name: log(run_id, str(path), name))
    for child in child_runs(client, sweep_run, status="RUNNING", on_error=failures):
        child_id = child.info.run_id
        attempt(f"closing child run {child_id}", lambda child_id=child_id: end_run(client, child_id))
    attempt(f"end of sweep run {run_id}", lambda: client.set_terminated(run_id, status=status))
    return failures


def preload_model_export() -> None:
    """Import torch._dynamo (1-5 s), which log_best_trial's model export (torch.export) needs: run.run calls this in
    a thread during fit, while the driver mostly waits for results. (The trial workers never import it: see
    optim.eager.)"""
    import torch._dynamo  # noqa: F401


def log_best_trial(
    sweep_run: SweepRun,
    *,
    child_run_id: str,
    test_metrics: dict[str, float],
    model: torch.nn.Module,
    input_example: numpy.ndarray,
    preprocessing: dict[str, Any],
) -> None:
    """Log the test metrics and the model (artifact name "model") to the best trial's child run.

    `preprocessing` (how raw images become the model's input, and the class names) goes into the model's metadata in
    its MLmodel file. MLflow 3 saves it as a torch.export program (data/model.pt2), traced on `input_example`: loading
    it back (mlflow.pytorch.load_model) gives a torch.fx GraphModule and imports nothing of raysweep.
    Raises MlflowException when MLflow fails."""
    import mlflow.pytorch

    client = MlflowClient(sweep_run.tracking_uri)
    now_ms = int(time.time() * 1000)
    client.log_batch(child_run_id, metrics=[Metric(k, float(v), now_ms, 0) for k, v in test_metrics.items()])
    status = client.get_run(child_run_id).info.status
    model.eval()  # the signature is inferred from a forward pass: batch norm must use running stats
    with fluent_tracking_uri(sweep_run.tracking_uri):
        mlflow.start_run(run_id=child_run_id)
        try:
            # Explicit requirements: inferring them loads the model in a subprocess (10-20 s on 2 cores).
            requirements = mlflow.pytorch.get_default_pip_requirements()  # torch, cloudpickle
            mlflow.pytorch.log_model(model, name="model", input_example=input_example,
                                     pip_requirements=requirements, metadata=preprocessing)
        finally:  # reopening the run made it RUNNING: give it back its own end state
            mlflow.end_run(status=status if status in ("FINISHED", "FAILED", "KILLED") else "FINISHED")
