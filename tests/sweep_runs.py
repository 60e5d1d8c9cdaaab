"""Running the real command line in tests: `python -m raysweep.run` as a subprocess, as users run it, and reading
what it left behind (trials.csv, Tune's result.json files, the MLflow record)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAYSWEEP_SHARED_DATA", REPO.parent / "shared" / "data"))
# What a sweep file written by a test starts with: the imports every sweep file in sweeps/ takes from.
SWEEP_HEADER = "from raysweep.sweep import Sweep, choice, loguniform, quniform, uniform\n\n"
# What a trial given a (fake) GPU share prints when torch sees no CUDA device (raysweep.trainable.pick_device).
NO_CUDA_WARNING = "Ray assigned a GPU to this trial but torch sees no CUDA device; training on the CPU"


def write_sweep(folder: Path, body: str, *, name: str = "sweep.py") -> Path:
    """A sweep file in `folder` whose text is `body` (dedented), importing the helpers it needs."""
    path = folder / name
    path.write_text(SWEEP_HEADER + textwrap.dedent(body))
    return path


def sweep_source(args: str, *, name: str = "bad") -> str:
    """The text of a sweep file defining Sweep(<args>): named `name` and searching lr unless args say otherwise."""
    name_arg = "" if "name=" in args else f'name="{name}", '
    space_arg = "" if "space=" in args else 'space={"lr": loguniform(1e-3, 1e-1)}, '
    return SWEEP_HEADER + f"SWEEP = Sweep({name_arg}{space_arg}{args})\n"


def write_text(folder: Path, text: str, *, name: str = "sweep.py") -> Path:
    """A file in `folder` holding `text` as written (dedented): a sweep file, good or bad, or another file."""
    path = folder / name
    path.write_text(textwrap.dedent(text))
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


def command(sweep_file: Path, folder: Path, *args: str, address: str | None = None) -> list[str]:
    """The sweep command with its storage in folder/results; with `address`, it joins that Ray cluster (e.g. the
    session's shared one, conftest.ray_address) instead of starting a local Ray of its own."""
    joins = ["--address", address] if address else []
    return [sys.executable, "-m", "raysweep.run", str(sweep_file), "--storage", str(folder / "results"), *joins, *args]


def run_sweep(sweep_file: Path, folder: Path, *args: str, address: str | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command(sweep_file, folder, *args, address=address), cwd=folder, env=sweep_env(folder),
                          capture_output=True, text=True, timeout=timeout)


def trials_csv(folder: Path, sweep_name: str) -> list[dict[str, str]]:
    """The rows of the newest run's results CSV."""
    runs = sorted((folder / "results" / sweep_name).iterdir())
    with open(runs[-1] / "trials.csv") as handle:
        return list(csv.DictReader(handle))


def trial_results(folder: Path, sweep_name: str) -> dict[str, list[dict]]:
    """Per trial id: the results (one per epoch) Ray Tune recorded in the trial's result.json in folder/results."""
    found = {}
    for path in (folder / "results" / sweep_name).glob("*/*/result.json"):
        lines = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line Tune is still writing
                lines.append(json.loads(line))
        # Each result names its trial; the folder (trainable_<trial id>_<n>_<settings>) does too, but a grid's trial
        # ids hold an underscore themselves (<experiment>_00003).
        found[lines[0]["trial_id"] if lines else path.parent.name.split("_")[1]] = lines
    return found


def epochs_checkpointed(trial_dir: Path) -> int:
    """How many epochs the trial in trial_dir (in the storage) has finished, from its checkpoints (one per epoch, all
    kept while the sweep runs). Its worker writes them there itself, so they are up to date where result.json, synced
    by the driver with its experiment state, may lag by seconds: fault tests judge how far a trial is by them."""
    return len(list(trial_dir.glob("checkpoint_*")))


def assert_resumed_from_a_checkpoint(results: list[dict], *, epochs: int, by: str) -> None:
    """The results (Tune's result.json, in order) of a trial whose worker or node was killed part-way come from two
    places (`by`: "pid" or "node_ip"), the killed one's first. The second resumed from a checkpoint of the first, not
    from epoch 1, and ran to the end: at the epoch after the last one the first reported, or at that one again when
    the kill fell between its result and Tune registering its checkpoint (Tune fetches a function trainable's
    checkpoint with a separate save call after the result). The record keeps an epoch's first report (trial_log)."""
    places = list(dict.fromkeys(r[by] for r in results))
    assert len(places) == 2, places
    first = [r for r in results if r[by] == places[0]]
    rest = [r for r in results if r[by] == places[1]]
    assert results == first + rest  # the killed place's results, then the other's
    assert [r["training_iteration"] for r in first] == list(range(1, len(first) + 1))
    start = rest[0]["training_iteration"]
    assert max(2, len(first)) <= start <= len(first) + 1, (len(first), start)
    # Tune counts iterations itself; `epoch` is the trainable's own count, which only its checkpoint carries over.
    assert [r["training_iteration"] for r in rest] == [r["epoch"] for r in rest] == list(range(start, epochs + 1))


def result_lines(folder: Path, sweep_name: str) -> dict[str, int]:
    """Per trial folder: how many results (epochs) Ray Tune recorded."""
    return {path.parent.name: len(path.read_text().splitlines())
            for path in (folder / "results" / sweep_name).glob("*/*/result.json")}


def saved_statuses(folder: Path, sweep_name: str) -> dict[str, str]:
    """Per trial folder: the status (RUNNING, TERMINATED, ...) in the experiment state Tune last saved, which is what
    `--resume` starts from. Empty while there is none, or while Tune is still writing it."""
    states = sorted((folder / "results" / sweep_name).glob("*/experiment_state-*.json"))
    try:
        trials = json.loads(states[-1].read_text())["trial_data"] if states else []
    except (json.JSONDecodeError, KeyError):
        return {}
    return {state["relative_logdir"]: state["status"] for state in (json.loads(data) for data, _ in trials)}


def assert_each_trial_once_and_complete(folder: Path, name: str, *, trials: int, epochs: int) -> None:
    """trials.csv has `trials` distinct trials, each completed after `epochs` epochs, and the MLflow store in folder
    has exactly one finished child run per trial, with every epoch's val_loss logged once."""
    rows = trials_csv(folder, name)
    assert len(rows) == trials and len({r["trial_id"] for r in rows}) == trials
    assert all(r["status"] == "completed" and int(r["epochs"]) == epochs for r in rows)
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name(name)
    children = client.search_runs([experiment.experiment_id], "tags.`raysweep.role` = 'trial'")
    assert sorted(c.data.tags["raysweep.trial_id"] for c in children) == sorted(r["trial_id"] for r in rows)
    for child in children:
        assert child.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert sorted(steps) == list(range(1, epochs + 1))  # nothing lost, nothing logged twice
