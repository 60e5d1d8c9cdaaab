"""Where `python -m raysweep.report` reads and writes: the MLflow store the sweep used, which must already exist
(MLflow creates an empty one at the first read of a missing local store), and the reported run's own results folder,
beside the trials.csv the sweep wrote there."""

from __future__ import annotations

import re
from pathlib import Path

from raysweep.storage import local_results_dir


class StoreNotFound(FileNotFoundError):
    """A local tracking URI names a database file or folder that is not there."""


def check_store_exists(uri: str) -> None:
    """Raise StoreNotFound for a local store (sqlite file, mlruns folder) that does not exist; servers pass."""
    path = None
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
    elif uri.startswith("file:") or "://" not in uri:
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
    if path is not None and not path.exists():
        raise StoreNotFound(f"no MLflow store at {uri} (nothing at {path.absolute()}); pass --tracking-uri or set "
                            f"MLFLOW_TRACKING_URI to the store the sweep used")


def results_folder(*, sweep_key: str, experiment_name: str, run_id: str) -> Path:
    """The run's results folder, from where Ray Tune kept it (the sweep run's tag raysweep.sweep_key). A run recorded
    without that tag gets results/<experiment>/<run id>: a folder of its own, never another run's."""
    if sweep_key:
        return local_results_dir(sweep_key, experiment_name)
    return Path("results").resolve() / re.sub(r"[^A-Za-z0-9._-]+", "_", experiment_name) / run_id
