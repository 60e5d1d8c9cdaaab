"""The MLflow vocabulary of raysweep's record: its tag names, where a store lives, short timeouts, and the few calls
(find, list, end a run) that the sweep run and the trial callback share.

Only the driver talks to MLflow; raysweep.tracking writes the sweep's parent run, raysweep.tracking_callback the trials'
child runs, both through what is here.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

# Numeric per-epoch keys of ours that become metrics (step = epoch); Tune's own keys are not logged.
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s")
OPTIONAL_METRICS = ("recon_loss", "val_recon_loss")  # cae_mlp only
ABANDONED = "abandoned"  # the status tag of a deleted orphan run: see tracking.abandon_unknown_trial_runs
ROLE, SWEEP_KEY, TRIAL_ID = "raysweep.role", "raysweep.sweep_key", "raysweep.trial_id"
STATUS, STOPPED_EPOCH, PARENT = "raysweep.status", "raysweep.stopped_epoch", "mlflow.parentRunId"
STOP_REASON = "raysweep.stop_reason"  # one of status.STOP_REASONS
SEED = "raysweep.seed"  # on a seed's run nested under its configuration's run (repeats)
# On a trial's run: the settings its sweep gave it (fixed or sampled, a conditional choice's active children only),
# comma-separated. Its params hold every setting; the others are defaults it did not choose (an adam trial's rho).
GIVEN = "raysweep.given"

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


@dataclass(frozen=True)
class SweepRun:
    tracking_uri: str
    experiment_id: str
    run_id: str  # the parent run


class TrackingUnavailableError(RuntimeError):
    """The MLflow tracking store cannot be reached or written."""


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
                f"MLflow server {uri} did not answer within {timeout_s:g} s ({one_line(exc)}); start it, "
                "or pass --tracking-uri / set MLFLOW_TRACKING_URI to a running server or a sqlite:/// file"
            ) from None
        if response.status_code >= 500:
            raise TrackingUnavailableError(
                f"MLflow server {uri} answered HTTP {response.status_code}; check the server's log, "
                "or pass --tracking-uri / set MLFLOW_TRACKING_URI to a working server"
            )
        return
    folder = local_store_folder(uri)
    if folder is None:  # another database or a hosted store: its client reports its own errors
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise TrackingUnavailableError(
            f"MLflow store {uri} needs a writable folder {folder}, but {one_line(exc)}; "
            "pass --tracking-uri / set MLFLOW_TRACKING_URI to a writable location"
        ) from None


def open_store_in_background(uri: str) -> threading.Thread:
    """Open the tracking store in a thread and return it, for the caller to join before it uses the store.

    A new sqlite store takes seconds to create its tables; run.main does it while ray.init waits for Ray's processes
    to start. MLflow keeps one store per URI, so the sweep's own client then finds it open. Errors are left for that
    client to raise, with its own message."""

    def open_store() -> None:
        with suppress(Exception):
            MlflowClient(uri).search_experiments(max_results=1)

    thread = threading.Thread(target=open_store, name="raysweep-open-mlflow-store", daemon=True)
    thread.start()
    return thread


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
def fluent_tracking_uri(uri: str) -> Iterator[None]:
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


def search_runs(client: MlflowClient, experiment_id: str, query: str) -> list:
    """All runs matching query, newest first (search_runs pages at 1000)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=query, max_results=1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_trial_run_id(client: MlflowClient, sweep_run: SweepRun, trial_id: str) -> str | None:
    query = f"tags.`{PARENT}` = '{sweep_run.run_id}' AND tags.`{TRIAL_ID}` = '{trial_id}'"
    runs = search_runs(client, sweep_run.experiment_id, query)
    return runs[0].info.run_id if runs else None


def child_runs(client: MlflowClient, sweep_run: SweepRun, *, status: str | None, on_error: list[str]) -> list:
    """The parent's child runs (those with the given MLflow status, or all); a failure goes to on_error."""
    query = f"tags.`{PARENT}` = '{sweep_run.run_id}'" + (f" AND attributes.status = '{status}'" if status else "")
    try:
        with short_http():
            return search_runs(client, sweep_run.experiment_id, query)
    except Exception as exc:
        on_error.append(f"listing child runs{f' left {status}' if status else ''}: {one_line(exc)}")
        return []


def end_run(client: MlflowClient, run_id: str, status: str = "failed", run_status: str = "KILLED",
            stopped_epoch: int | None = None, stop_reason: str | None = None) -> None:
    tags = [RunTag(STATUS, status), RunTag(STOP_REASON, stop_reason or status)]
    if stopped_epoch is not None:
        tags.append(RunTag(STOPPED_EPOCH, str(stopped_epoch)))
    client.log_batch(run_id, tags=tags)
    client.set_terminated(run_id, status=run_status)


def param_value(value: Any) -> str:
    return str(value)[:6000]  # MLflow's limit on a param value, in characters


def one_line(exc: BaseException, *, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def local_artifacts(uri: str) -> str | None:
    """Artifacts of a local sqlite store go beside its database, not into ./mlruns of whatever folder we run in."""
    if not uri.startswith("sqlite:///"):
        return None  # a server chooses its own artifact store; a file store keeps artifacts inside itself
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()


def local_store_folder(uri: str) -> Path | None:
    """The folder a local store writes into, or None for stores that are not local files."""
    if uri.startswith("sqlite:///"):
        db_path = uri[len("sqlite:///") :]
        return None if db_path in ("", ":memory:") else Path(db_path).absolute().parent
    if uri.startswith("file:"):
        from mlflow.utils.file_utils import local_file_uri_to_path

        return Path(local_file_uri_to_path(uri)).absolute()
    return Path(uri).absolute() if "://" not in uri and not uri.startswith("databricks") else None


def trial_label(params: dict) -> str:
    """E.g. {"optimizer": "sgd", "lr": 0.01, "optimizer.momentum": 0.9} -> "sgd lr=0.01 momentum=0.9"."""
    from raysweep.config import flatten  # here: config imports torch, which the dry run's checks do not need

    # HyperOpt's evaluated params are paths ("optimizer/optimizer.momentum"), Tune's are nested dicts.
    flat = {key.rsplit("/", 1)[-1]: value for key, value in flatten(params).items()}
    names, parts = [], []  # choices by name first ("sgd"), then numbers ("lr=0.01")
    for key, value in flat.items():
        name = key.rsplit(".", 1)[-1]
        if isinstance(value, str):
            names.append(value)
        elif isinstance(value, float):
            parts.append(f"{name}={value:.3g}")
        elif isinstance(value, (tuple, list)):
            parts.append(f"{name}={','.join(str(v) for v in value)}")
        else:
            parts.append(f"{name}={value}")
    return " ".join(names + parts)[:200] or "trial"


def is_permanent(exc: Exception) -> bool:
    """A request MLflow rejected (4xx other than 429 rate limiting) fails the same way when retried."""
    if not isinstance(exc, MlflowException):
        return False
    status = exc.get_http_status_code()
    return 400 <= status < 500 and status != 429
