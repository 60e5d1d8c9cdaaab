"""What a sweep needs from outside, checked before Ray starts and before any MLflow run is opened.

`check(...)` is the one path both a real run and `--dry-run` take, so a dry run passes exactly when the real run
would get past its start. Each failure is a PreflightError whose message is one line naming the option and the rule;
the command line prints it and exits 2. In order, cheapest first:
1. MLflow answers (a server) or its store folder is writable;
2. the storage is reachable and writable: a probe object is written and deleted through pyarrow's file system, the
   one Ray Tune itself writes with, so a local folder, NFS and s3:// are checked alike;
3. `--address` answers: a TCP connect to the cluster's GCS port, within a timeout (ray.init itself would wait minutes);
4. the data: the data set is loaded, as the run will load it (a few seconds even for CIFAR-10, and it is the only way
   to check val_size and subset against the real sizes too);
5. on --resume, the run to resume exists.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysweep import data, mlflow_runs, storage
from raysweep.sweep import trial_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from raysweep.data import Dataset
    from raysweep.sweep import Sweep

STORAGE_TIMEOUT_S = 30.0  # an unreachable S3 endpoint retries for minutes inside pyarrow
ADDRESS_TIMEOUT_S = 30.0
PROBE_PREFIX = ".raysweep-probe-"


class PreflightError(Exception):
    """Something the sweep needs from outside is missing. The message is one line for the user."""


@dataclass(frozen=True)
class Ready:
    """What the checks found, for the run: nothing here is looked up twice."""

    tracking_uri: str
    storage_path: str  # <storage>/<sweep name>, absolute, or a URI
    dataset: Dataset
    previous: str | None  # the run --resume continues


def check(sweep: Sweep, *, tracking_uri: str | None, storage_option: str | None, address: str | None,
          data_dir: str | None, resume: bool) -> Ready:
    """Every check a run makes before Ray starts; raises PreflightError with one line."""
    uri = mlflow_runs.resolve_tracking_uri(tracking_uri)
    try:
        mlflow_runs.check_reachable(uri)
    except mlflow_runs.TrackingUnavailableError as exc:
        raise PreflightError(str(exc)) from None
    storage_path = storage.storage_uri(storage_option or "results", sweep.name)
    check_storage(storage_path, option=storage_option or "results")
    if address:
        check_address(address)
    dataset = load_data(sweep, data_dir=data_dir)
    previous = storage.latest_run(storage_path) if resume else None
    if resume and previous is None:
        raise PreflightError(f"`--resume` needs an earlier run of sweep {sweep.name!r} under {storage_path}, "
                             "but found none")
    return Ready(tracking_uri=uri, storage_path=storage_path, dataset=dataset, previous=previous)


def load_data(sweep: Sweep, *, data_dir: str | None) -> Dataset:
    try:
        return data.load(sweep.dataset, data_dir=data_dir, val_size=sweep.val_size, val_pick=sweep.val_pick,
                         seed=sweep.seed, subset=sweep.subset)
    except data.DataNotFoundError as exc:
        raise PreflightError(str(exc)) from None
    except ValueError as exc:  # e.g. a subset or val_size larger than the data set
        raise PreflightError(f"data: {exc}") from None


def check_storage(storage_path: str, *, option: str, timeout_s: float = STORAGE_TIMEOUT_S) -> None:
    """Write and delete a probe object under storage_path; leave no folder behind that was not there before."""
    rule = f"`--storage` must be a folder or URI that this machine can write to, but got --storage={option!r}"

    def probe() -> None:
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(storage_path)  # reads a URI's query (endpoint_override=...)
        created = _missing_folders(root) if fs.type_name == "local" else []
        fs.create_dir(root, recursive=True)
        try:
            name = f"{root.rstrip('/')}/{PROBE_PREFIX}{uuid.uuid4().hex}"
            with fs.open_output_stream(name) as stream:
                stream.write(b"raysweep checks it can write here\n")
            fs.delete_file(name)
        finally:
            for folder in created:  # deepest first; a dry run leaves the storage as it found it
                fs.delete_dir(folder)

    _within(timeout_s, probe, failure=lambda why: PreflightError(f"{rule} ({why})"))


def _missing_folders(root: str) -> list[str]:
    """The folders create_dir(root, recursive=True) would create, deepest first."""
    missing, path = [], Path(root)
    while not path.exists() and path != path.parent:
        missing.append(str(path))
        path = path.parent
    return missing


def check_address(address: str, *, timeout_s: float = ADDRESS_TIMEOUT_S) -> None:
    """A TCP connect to the address's host:port: a cluster's GCS (or a Ray client server) answers at once.

    "auto" and "local" name no port: ray.init finds (or fails to find) the cluster from this machine's files, fast."""
    if address in ("auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    rule = f"`--address` must be HOST:PORT of a running Ray cluster, but got --address={address!r}"
    if not host or not port.isdigit():
        raise PreflightError(rule)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        why = f"no answer within {timeout_s:g} s" if isinstance(exc, TimeoutError) else mlflow_runs.one_line(exc)
        raise PreflightError(f"{rule}, and connecting to it failed ({why}); start the cluster "
                             "(ray start --head / ray up) or fix the address") from None


def check_local_resources(sweep: Sweep) -> None:
    """A local Ray gets this machine's cores: a trial asking for more would wait forever (as connect() says)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if sweep.cpu > cores:
        raise PreflightError(f"`cpu` per trial must fit on one node, but got cpu={sweep.cpu:g} and this machine "
                             f"has {cores}; trials would wait forever")


def _within(timeout_s: float, action: Callable[[], Any], *, failure: Callable[[str], Exception]) -> None:
    """Run action in a daemon thread; raise failure(why) if it raises or is still running after timeout_s."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            action()
        except BaseException as exc:  # noqa: BLE001  the caller turns any of them into one line
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True, name="raysweep-preflight")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():  # left running: a daemon thread does not hold up the exit that follows
        raise failure(f"no answer within {timeout_s:g} s")
    if errors:
        raise failure(mlflow_runs.one_line(errors[0]))


def print_dry_run(sweep: Sweep) -> None:
    """What --dry-run prints once every check has passed: the resolved sweep and a few sampled trial configs."""
    from raysweep import space

    print(json.dumps(sweep.to_dict(), indent=2, default=str))
    trials = space.grid_size(sweep) * sweep.num_samples if sweep.searcher == "grid" else sweep.num_samples
    print(f"\n{trials} trial(s), at most {trials * sweep.max_epochs} epochs. Sample trial configs:")
    for config in space.sample(sweep, count=3):
        print("  " + json.dumps({**trial_settings(sweep), **config}, default=str))
