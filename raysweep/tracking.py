"""MLflow record of a sweep: one parent run per execution, one child run per trial.

Only the driver talks to MLflow. This module opens and closes the sweep's parent run and logs the best trial;
raysweep.tracking_callback.MlflowTrialCallback turns Ray Tune's trial events into the child runs.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

if TYPE_CHECKING:
    import numpy
    import torch

# Numeric per-epoch keys of ours that become metrics (step = epoch); Tune's own keys are not logged.
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s")
OPTIONAL_METRICS = ("recon_loss", "val_recon_loss")  # cae_mlp only
STATUSES = ("completed", "early_stopped", "diverged", "failed")
ABANDONED = "abandoned"  # the status tag of a deleted orphan run: see abandon_unknown_trial_runs
ROLE, SWEEP_KEY, TRIAL_ID = "raysweep.role", "raysweep.sweep_key", "raysweep.trial_id"
STATUS, STOPPED_EPOCH, PARENT = "raysweep.status", "raysweep.stopped_epoch", "mlflow.parentRunId"

# The callback must not stall the Tune loop: one retry, no backoff, 5 s per request (MLflow's
# defaults are 7 retries with exponential backoff and 120 s, i.e. minutes per call when the server is down).
# Ending a run would also fetch it again only to print its URL amid Tune's progress output.
_SHORT_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


class TrackingUnavailableError(RuntimeError):
    """The MLflow tracking store cannot be reached or written."""


@dataclass(frozen=True)
class SweepRun:
    tracking_uri: str
    experiment_id: str
    run_id: str  # the parent run


def resolve_tracking_uri(uri: str | None) -> str:
    """The explicit URI, else $MLFLOW_TRACKING_URI, else MLflow's default (sqlite:///<cwd>/mlflow.db,
    or ./mlruns when that folder already holds runs), so `mlflow ui` in the same folder shows it."""
    if uri:
        return uri
    return os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()


def check_reachable(uri: str, *, timeout_s: float = 5.0) -> None:
    """Raise TrackingUnavailableError unless the server answers (http) or the store folder is writable."""
    if uri.startswith(("http://", "https://")):
        import requests

        try:  # (connect, read) timeouts, so the whole check stays within timeout_s
            response = requests.get(f"{uri.rstrip('/')}/health", timeout=(timeout_s / 2, timeout_s / 2))
        except requests.RequestException as exc:
            raise TrackingUnavailableError(
                f"MLflow server {uri} did not answer within {timeout_s:g} s ({_one_line(exc)}); start it, "
                "or pass --tracking-uri / set MLFLOW_TRACKING_URI to a running server or a sqlite:/// file"
            ) from None
        if response.status_code >= 500:
            raise TrackingUnavailableError(
                f"MLflow server {uri} answered HTTP {response.status_code}; check the server's log, "
                "or pass --tracking-uri / set MLFLOW_TRACKING_URI to a working server"
            )
        return
    folder = _local_store_folder(uri)
    if folder is None:  # another database or a hosted store: its client reports its own errors
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise TrackingUnavailableError(
            f"MLflow store {uri} needs a writable folder {folder}, but {_one_line(exc)}; "
            "pass --tracking-uri / set MLFLOW_TRACKING_URI to a writable location"
        ) from None


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
        experiment_id = client.create_experiment(experiment_name, artifact_location=_local_artifacts(tracking_uri))
    else:
        experiment_id = experiment.experiment_id
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
    all_tags = {**runtime_tags(), **tags, ROLE: "sweep", SWEEP_KEY: sweep_key}
    query = f"tags.`{ROLE}` = 'sweep' AND tags.`{SWEEP_KEY}` = '{sweep_key}'"
    previous = _search(client, experiment_id, query) if resume else []
    if previous:
        run_id = previous[0].info.run_id  # _search lists the newest first
        client.update_run(run_id, status="RUNNING")
        logged = previous[0].data.params
    else:
        run_name = f"{experiment_name} {time.strftime('%Y-%m-%d %H:%M:%S')}"
        run_id = client.create_run(experiment_id, run_name=run_name).info.run_id
        logged = {}
    new_params = [Param(k, _param_value(v)) for k, v in params.items() if k not in logged]
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
    return _find_trial_run(MlflowClient(sweep_run.tracking_uri), sweep_run, trial_id)


def abandon_unknown_trial_runs(sweep_run: SweepRun, *, is_trial: Callable[[str], bool]) -> list[str]:
    """Delete (MLflow's soft delete) the child runs of trials that Tune's experiment does not hold.

    A driver killed between opening a trial's run and Tune's next save of its experiment state leaves such a run: the
    resumed experiment never knew the trial, and its searcher proposes another in its place. Each run is tagged
    raysweep.status=abandoned and ended KILLED first, so `mlflow runs restore` shows why it went. Returns one line
    per failure; never raises for MLflow errors."""
    client, failures = MlflowClient(sweep_run.tracking_uri), []
    for child in _children(client, sweep_run, status=None, on_error=failures):
        if child.data.tags.get(ROLE) != "trial" or is_trial(child.data.tags.get(TRIAL_ID, "")):
            continue
        try:
            with short_http():
                _end_run(client, child.info.run_id, status=ABANDONED)
                client.delete_run(child.info.run_id)
        except Exception as exc:
            failures.append(f"orphan trial run {child.info.run_id} not deleted: {_one_line(exc)}")
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
            failures.append(f"{what} not logged: {_one_line(exc)}")

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
    for child in _children(client, sweep_run, status="RUNNING", on_error=failures):
        child_id = child.info.run_id
        attempt(f"closing child run {child_id}", lambda child_id=child_id: _end_run(client, child_id))
    attempt(f"end of sweep run {run_id}", lambda: client.set_terminated(run_id, status=status))
    return failures


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
    its MLmodel file. The model is pickled by reference to its class: loading it back needs raysweep importable.
    Raises MlflowException when MLflow fails."""
    import mlflow.pytorch

    client = MlflowClient(sweep_run.tracking_uri)
    now_ms = int(time.time() * 1000)
    client.log_batch(child_run_id, metrics=[Metric(k, float(v), now_ms, 0) for k, v in test_metrics.items()])
    status = client.get_run(child_run_id).info.status
    model.eval()  # the signature is inferred from a forward pass: batch norm must use running stats
    with _fluent_tracking_uri(sweep_run.tracking_uri):
        mlflow.start_run(run_id=child_run_id)
        try:
            # Explicit requirements: inferring them loads the model in a subprocess (10-20 s on 2 cores).
            requirements = mlflow.pytorch.get_default_pip_requirements()  # torch, cloudpickle
            mlflow.pytorch.log_model(model, name="model", input_example=input_example,
                                     pip_requirements=requirements, metadata=preprocessing)
        finally:  # reopening the run made it RUNNING: give it back its own end state
            mlflow.end_run(status=status if status in ("FINISHED", "FAILED", "KILLED") else "FINISHED")


def _end_run(client: MlflowClient, run_id: str, status: str = "failed", run_status: str = "KILLED",
             stopped_epoch: int | None = None) -> None:
    tags = [RunTag(STATUS, status)]
    if stopped_epoch is not None:
        tags.append(RunTag(STOPPED_EPOCH, str(stopped_epoch)))
    client.log_batch(run_id, tags=tags)
    client.set_terminated(run_id, status=run_status)


def _find_trial_run(client: MlflowClient, sweep_run: SweepRun, trial_id: str) -> str | None:
    query = f"tags.`{PARENT}` = '{sweep_run.run_id}' AND tags.`{TRIAL_ID}` = '{trial_id}'"
    runs = _search(client, sweep_run.experiment_id, query)
    return runs[0].info.run_id if runs else None


def _children(client: MlflowClient, sweep_run: SweepRun, *, status: str | None, on_error: list[str]) -> list:
    """The parent's child runs (those with the given MLflow status, or all); a failure goes to on_error."""
    query = f"tags.`{PARENT}` = '{sweep_run.run_id}'" + (f" AND attributes.status = '{status}'" if status else "")
    try:
        with short_http():
            return _search(client, sweep_run.experiment_id, query)
    except Exception as exc:
        on_error.append(f"listing child runs{f' left {status}' if status else ''}: {_one_line(exc)}")
        return []


def _search(client: MlflowClient, experiment_id: str, query: str) -> list:
    """All runs matching query, newest first (search_runs pages at 1000)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=query, max_results=1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _param_value(value: Any) -> str:
    return str(value)[:6000]  # MLflow's limit on a param value, in characters


def _one_line(exc: BaseException, *, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _local_artifacts(uri: str) -> str | None:
    """Artifacts of a local sqlite store go beside its database, not into ./mlruns of whatever folder we run in."""
    if not uri.startswith("sqlite:///"):
        return None  # a server chooses its own artifact store; a file store keeps artifacts inside itself
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()


def _local_store_folder(uri: str) -> Path | None:
    """The folder a local store writes into, or None for stores that are not local files."""
    if uri.startswith("sqlite:///"):
        db_path = uri[len("sqlite:///") :]
        return None if db_path in ("", ":memory:") else Path(db_path).absolute().parent
    if uri.startswith("file:"):
        from mlflow.utils.uri import local_file_uri_to_path

        return Path(local_file_uri_to_path(uri)).absolute()
    return Path(uri).absolute() if "://" not in uri and not uri.startswith("databricks") else None


@contextmanager
def short_http() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in _SHORT_HTTP}
    os.environ.update(_SHORT_HTTP)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _fluent_tracking_uri(uri: str) -> Iterator[None]:
    """mlflow.pytorch.log_model only uses the global URI; set it, then restore it and $MLFLOW_TRACKING_URI."""
    from mlflow.tracking._tracking_service import utils

    saved_global, saved_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_global)  # None also clears $MLFLOW_TRACKING_URI
        if saved_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env
