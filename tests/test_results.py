"""The record after a real sweep (real local Ray, real MLflow store, MNIST from the shared data when present):
trials.csv, each trial's MLflow history, the sweep run and the test evaluation agree on one definition of the best;
every trial says why it stopped; MLflow alone holds enough to rebuild a trial; --resume of the finished sweep changes
nothing."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from raysweep.config import TrialConfig
from raysweep.data_files import IDX_FILES
from raysweep.status import STOP_REASONS
from tests.sweep_runs import SHARED_DATA, run_sweep, trials_csv, write_sweep

MNIST_RAW = SHARED_DATA / "MNIST" / "raw"
DATASET = "mnist" if all((MNIST_RAW / f"{stem}.gz").is_file() for stem in IDX_FILES) else "digits"
MAX_EPOCHS = 4
RECORD = f"""
SWEEP = Sweep(
    name="record",
    dataset="{DATASET}",
    val_size=500,
    subset=1500,
    fixed={{"hidden": [32], "optimizer": "momentum", "batch_size": 64, "patience": 1}},
    space={{"lr": choice([10.0, 0.3, 0.05, 0.01, 0.001, 0.0003])}},
    searcher="grid",
    scheduler="asha",
    grace_period=1,
    reduction_factor=2,
    max_epochs={MAX_EPOCHS},
    num_samples=1,
    max_concurrent=2,
)
"""


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    folder = tmp_path_factory.mktemp("record")
    data_dir = ["--data-dir", str(SHARED_DATA)] if DATASET == "mnist" else []
    done = run_sweep(write_sweep(folder, RECORD), folder, *data_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("record").experiment_id])
    (parent,) = [r for r in runs if r.data.tags["raysweep.role"] == "sweep"]
    trials = {r.data.tags["raysweep.trial_id"]: r for r in runs if r.data.tags["raysweep.role"] == "trial"}
    return folder, data_dir, trials_csv(folder, "record"), client, parent, trials


def history(client: MlflowClient, run_id: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a metric's MLflow history, in step order."""
    points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, metric))
    return np.array([s for s, _ in points]), np.array([v for _, v in points])


def test_trials_csv_and_each_trials_mlflow_history_agree_on_best_value_best_epoch_epochs_and_status(record):
    _, _, rows, client, _, trials = record
    assert sorted(trials) == sorted(r["trial_id"] for r in rows) and len(rows) == 6
    for row in rows:
        run = trials[row["trial_id"]]
        steps, values = history(client, run.info.run_id, "val_acc")
        finite = np.isfinite(values)
        assert int(row["epochs"]) == steps.max()
        if finite.any():  # numpy's own argmax: the first epoch of a tie
            assert float(row["best_val_acc"]) == pytest.approx(values[finite].max(), abs=1e-12)
            assert int(row["best_epoch"]) == steps[finite][np.argmax(values[finite])]
        assert run.data.tags["raysweep.status"] == row["status"]
        assert run.data.tags["raysweep.stop_reason"] == row["stop_reason"]
        assert run.info.run_name == row["label"]


def test_each_trial_says_why_it_stopped_by_one_rule(record):
    _, _, rows, *_ = record
    by_reason = {}
    for row in rows:
        by_reason.setdefault(row["stop_reason"], []).append(row)
    assert set(by_reason) <= set(STOP_REASONS)
    assert [float(r["lr"]) for r in by_reason["diverged"]] == [10.0]
    assert by_reason["asha"], "ASHA stopped no trial"
    assert all(int(r["epochs"]) < MAX_EPOCHS and r["status"] == "early_stopped" for r in by_reason["asha"])
    assert all(int(r["epochs"]) == MAX_EPOCHS and r["status"] == "completed" for r in by_reason.get("max_epochs", []))
    assert all(r["status"] == "early_stopped" for r in by_reason.get("patience", []))


def test_the_sweep_run_and_the_test_evaluation_use_the_best_trials_best_epoch(record, monkeypatch):
    folder, _, rows, client, parent, trials = record
    sound = [r for r in rows if r["status"] != "diverged"]
    best = max(sound, key=lambda r: float(r["best_val_acc"]))
    assert parent.data.metrics["best_val_acc"] == pytest.approx(float(best["best_val_acc"]))
    assert parent.data.metrics["best_epoch"] == int(best["best_epoch"])
    best_run = trials[best["trial_id"]]
    assert parent.data.tags["raysweep.best_run_id"] == best_run.info.run_id
    assert parent.data.metrics["best_test_acc"] == pytest.approx(float(best["test_acc"]))
    (run_dir,) = (folder / "results" / "record").iterdir()
    outcome = json.loads((run_dir / "outcome.json").read_text())["best"]
    assert (outcome["label"], outcome["run_id"], outcome["best_epoch"], outcome["test_epoch"]) == (
        best_run.info.run_name, best_run.info.run_id, int(best["best_epoch"]), int(best["best_epoch"]))
    assert outcome["stop_reason"] == best["stop_reason"] and outcome["best_value"] == float(best["best_val_acc"])
    # The model logged with the test metrics is the best epoch's checkpoint (checkpoint_00000N holds epoch N + 1).
    (trial_dir,) = run_dir.glob(f"trainable_{best['trial_id']}_*")
    state = torch.load(trial_dir / f"checkpoint_{int(best['best_epoch']) - 1:06d}" / "state.pt", weights_only=False)
    assert state["epoch"] == int(best["best_epoch"])
    import mlflow.pytorch

    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    logged = mlflow.pytorch.load_model(f"runs:/{best_run.info.run_id}/model").state_dict()
    assert all(torch.equal(logged[k], state["model"][k]) for k in state["model"])


def test_each_trial_run_holds_every_setting_defaults_included(record):
    _, _, rows, _, _, trials = record
    defaults = TrialConfig().to_dict()
    for row in rows:
        params = trials[row["trial_id"]].data.params
        assert set(params) == set(defaults)
        assert (params["init"], params["activation"], params["patience"]) == ("he", "relu", "1")
        assert float(params["lr"]) == float(row["lr"])


def test_the_sweep_run_holds_the_data_split_and_a_checksum_of_the_files_read(record):
    _, _, _, _, parent, _ = record
    params = parent.data.params
    assert (params["dataset"], params["val_size"], params["val_pick"], params["subset"], params["seed"]) == (
        DATASET, "500", "first", "1500", "0")
    assert (params["data.train"], params["data.val"]) == ("1500", "500")
    if DATASET != "mnist":
        pytest.skip(f"{MNIST_RAW} is absent: no files to hash independently")
    digest = hashlib.sha256()
    for stem in IDX_FILES:  # the order data_files reads them in
        digest.update((MNIST_RAW / f"{stem}.gz").read_bytes())
    assert params["data.sha256"] == digest.hexdigest()


def test_resume_of_the_finished_sweep_changes_nothing_and_prints_the_summary(record):
    folder, data_dir, rows, client, parent, trials = record
    (run_dir,) = (folder / "results" / "record").iterdir()
    csv_before = (run_dir / "trials.csv").stat().st_mtime_ns, (run_dir / "trials.csv").read_bytes()
    runs_before = _runs(client, parent.info.experiment_id)
    models_before = _models(client, parent.info.experiment_id)

    done = run_sweep(folder / "sweep.py", folder, "--resume", *data_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best trial" in done.stdout
    assert ((run_dir / "trials.csv").stat().st_mtime_ns, (run_dir / "trials.csv").read_bytes()) == csv_before
    assert _runs(client, parent.info.experiment_id) == runs_before
    assert _models(client, parent.info.experiment_id) == models_before


def _runs(client: MlflowClient, experiment_id: str) -> dict[str, tuple]:
    return {r.info.run_id: (r.info.status, r.info.end_time, tuple(sorted(r.data.metrics.items())))
            for r in client.search_runs([experiment_id])}


def _models(client: MlflowClient, experiment_id: str) -> list[str]:
    """Every logged model of the experiment (MLflow 3 keeps them beside the runs, not among their artifacts)."""
    return sorted(m.model_id for m in client.search_logged_models(experiment_ids=[experiment_id]))
