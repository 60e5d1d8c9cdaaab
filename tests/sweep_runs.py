"""Running the real command line in tests: `python -m raysweep.run` as a subprocess, as users run it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAYSWEEP_SHARED_DATA", REPO.parent / "shared" / "data"))


def write_sweep(folder: Path, body: str, *, name: str = "sweep.py") -> Path:
    """A sweep file in `folder` whose text is `body` (dedented), importing the helpers it needs."""
    path = folder / name
    header = "from raysweep.sweep import Sweep, choice, loguniform, quniform, uniform\n\n"
    path.write_text(header + textwrap.dedent(body))
    return path


def sweep_env(folder: Path, *, snapshot_every_s: int | None = None) -> dict[str, str]:
    """The environment of a sweep subprocess. Fault tests pass `snapshot_every_s`: Tune then saves its experiment
    state (and syncs the trials' result.json to the storage, where the tests watch) that often, instead of every
    >= 10 s, so the moment a fault is due is seen while it lasts."""
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
    env.pop("RAY_ADDRESS", None)
    if snapshot_every_s is not None:
        env["TUNE_GLOBAL_CHECKPOINT_S"] = str(snapshot_every_s)
    return env


def command(sweep_file: Path, folder: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "raysweep.run", str(sweep_file), "--storage", str(folder / "results"), *args]


def run_sweep(sweep_file: Path, folder: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command(sweep_file, folder, *args), cwd=folder, env=sweep_env(folder), capture_output=True,
                          text=True, timeout=timeout)


def trials_csv(folder: Path, sweep_name: str) -> list[dict[str, str]]:
    """The rows of the newest run's results CSV."""
    runs = sorted((folder / "results" / sweep_name).iterdir())
    with open(runs[-1] / "trials.csv") as handle:
        return list(csv.DictReader(handle))


def result_lines(folder: Path, sweep_name: str) -> dict[str, int]:
    """Per trial folder: how many results (epochs) Ray Tune recorded."""
    return {path.parent.name: len(path.read_text().splitlines())
            for path in (folder / "results" / sweep_name).glob("*/*/result.json")}
