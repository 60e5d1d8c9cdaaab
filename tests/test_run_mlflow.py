"""The sweep command against a real `mlflow server` on 127.0.0.1: the whole record, and an outage mid-sweep."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from tests.servers import MlflowServer, wait_for
from tests.sweep_runs import command, result_lines, run_sweep, sweep_env, trial_results, trials_csv, write_sweep

QUICK = """
SWEEP = Sweep(
    name="{name}",
    dataset="digits",
    fixed={{"hidden": [32], "batch_size": 32}},
    space={{"optimizer": choice({{"sgd": {{"optimizer.momentum": uniform(0.5, 0.9)}}, "adam": {{}}}}),
            "lr": loguniform(1e-3, 1e-1)}},
    searcher="tpe",
    scheduler="none",
    num_samples=3,
    max_epochs=3,
    max_concurrent=2,
)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with MlflowServer(tmp_path_factory.mktemp("server")) as running:
        yield running


@pytest.fixture(scope="module")
def served_run(server, tmp_path_factory, ray_address):
    folder = tmp_path_factory.mktemp("served")
    done = run_sweep(write_sweep(folder, QUICK.format(name="served")), folder, "--tracking-uri", server.uri,
                     address=ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, done


def test_a_sweep_against_a_tracking_server_records_parent_children_and_the_best_model(served_run, server):
    folder, done = served_run
    rows = trials_csv(folder, "served")
    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("served")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("raysweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("raysweep.role") == "trial"]
    assert len(children) == len(rows) == 3
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    for child in children:
        row = next(r for r in rows if r["trial_id"] == child.data.tags["raysweep.trial_id"])
        assert child.data.params["optimizer"] == row["optimizer"]
        # Every setting is a param (issue #10): a momentum only under sgd, None (the default) under adam
        assert (child.data.params["optimizer.momentum"] != "None") == (row["optimizer"] == "sgd")
        assert len(client.get_metric_history(child.info.run_id, "val_acc")) == int(row["epochs"])
        assert child.data.tags["raysweep.status"] == row["status"] == "completed"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep.py", "resolved_sweep.json", "trials.csv", "report"} <= artifacts
    # What was logged is what ran: the sweep file as written, and the trials.csv of the results folder.
    logged = Path(client.download_artifacts(parent.info.run_id, "", str(folder / "logged")))
    assert (logged / "sweep.py").read_text() == (folder / "sweep.py").read_text()
    with open(logged / "trials.csv") as handle:
        assert list(csv.DictReader(handle)) == rows
    assert parent.data.params["searcher"] == "tpe" and "space.lr" in parent.data.params
    assert parent.data.tags["raysweep.sweep_file"].endswith("sweep.py")  # outside git here: no commit tag
    best = client.get_run(parent.data.tags["raysweep.best_run_id"])
    assert best.data.metrics["test_acc"] == pytest.approx(parent.data.metrics["best_test_acc"])


def test_the_best_model_loads_back_from_the_server_and_predicts(served_run, server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("served")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`raysweep.role` = 'sweep'")
    model_uri = f"runs:/{parent.data.tags['raysweep.best_run_id']}/model"
    model = mlflow.pytorch.load_model(model_uri)
    images = torch.tensor(np.random.default_rng(0).normal(size=(4, 1, 8, 8)), dtype=torch.float32)
    assert model(images).shape == (4, 10)
    preprocessing = mlflow.models.get_model_info(model_uri).metadata  # how raw images become `images`
    assert len(preprocessing["mean"]) == len(preprocessing["std"]) == 1 and len(preprocessing["classes"]) == 10
    assert 0 < preprocessing["mean"][0] < 1 and preprocessing["dataset"] == "digits"


def test_an_unreachable_tracking_server_fails_at_once_with_one_line(tmp_path):
    done = run_sweep(write_sweep(tmp_path, QUICK.format(name="nowhere")), tmp_path,
                     "--tracking-uri", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "http://127.0.0.1:9" in done.stderr
    assert not (tmp_path / "results").exists()  # nothing ran


SLOW = QUICK.replace('"hidden": [32], "batch_size": 32', '"hidden": [256, 256], "batch_size": 4').replace(
    "num_samples=3", "num_samples=4").replace('dataset="digits"', 'dataset="synthetic"')


def test_a_tracking_server_outage_mid_sweep_loses_no_trial_and_is_reported(tmp_path, ray_address):
    server = MlflowServer(tmp_path / "server")
    server.start()
    sweep_file = write_sweep(tmp_path, SLOW.format(name="outage"))
    env = sweep_env(tmp_path)
    env["MLFLOW_TRACKING_URI"] = server.uri
    driver = subprocess.Popen(command(sweep_file, tmp_path, address=ray_address), cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def first_epoch_done() -> bool:
            return (tmp_path / "results").exists() and any(n >= 1 for n in result_lines(tmp_path, "outage").values())

        wait_for(first_epoch_done, timeout_s=600, what="a trial's first epoch", process=driver)
        server.stop()  # the tracking server goes away after the first epoch
        output, _ = driver.communicate(timeout=900)
    finally:
        if driver.poll() is None:
            driver.kill()
        server.stop()
    assert driver.returncode == 0, output[-3000:]
    rows = trials_csv(tmp_path, "outage")
    # Every trial's results are kept in the CSV, each trial once, none lost to the outage.
    assert len({r["trial_id"] for r in rows}) == len(rows) == 4
    assert all(r["status"] != "failed" and int(r["epochs"]) >= 1 for r in rows)
    # Each row holds every epoch Tune recorded for its trial, the ones after the outage included.
    recorded = {trial: len(results) for trial, results in trial_results(tmp_path, "outage").items()}
    assert {r["trial_id"]: int(r["epochs"]) for r in rows} == recorded
    warnings = [line for line in output.splitlines() if line.startswith("warning:")]
    assert warnings and any("not logged" in w for w in warnings)


# Fails the driver once a trial has reported its second epoch: the trial's run is open, Tune is mid-fit. The
# callback is patched in the driver's own process (it runs only there), as a real bug or lost storage would strike.
FAIL_MID_SWEEP = """
import sys
from raysweep import run, tracking_callback
logged = tracking_callback.MlflowTrialCallback.on_trial_result
def on_trial_result(self, iteration, trials, trial, result, **info):
    logged(self, iteration, trials, trial, result, **info)
    if result.get("epoch", 0) >= 2:
        raise RuntimeError("injected: the driver fails mid-sweep")
tracking_callback.MlflowTrialCallback.on_trial_result = on_trial_result
sys.exit(run.main(sys.argv[1:]))
"""


def test_a_failure_after_the_sweep_run_opens_leaves_no_run_running_one_line_and_the_traceback(server, tmp_path):
    import sys

    sweep_file = write_sweep(tmp_path, SLOW.format(name="fails"))
    argv = [sys.executable, "-c", FAIL_MID_SWEEP, *command(sweep_file, tmp_path, "--tracking-uri", server.uri)[3:]]
    done = subprocess.run(argv, cwd=tmp_path, env=sweep_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("raysweep.run: error:")]
    assert "RuntimeError: injected: the driver fails mid-sweep" in line and "its MLflow runs were ended FAILED" in line
    (log_file,) = (tmp_path / "results" / "fails").glob("*/raysweep-error.log")
    assert line.endswith(f"full traceback in {log_file}")
    assert "Traceback (most recent call last)" in log_file.read_text() and "injected" in log_file.read_text()
    client = MlflowClient(server.uri)
    runs = client.search_runs([client.get_experiment_by_name("fails").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("raysweep.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("raysweep.role") == "trial"]
    assert trials and [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    assert parent.info.status == "FAILED"
    assert any(r.info.status == "FAILED" and r.data.tags["raysweep.stop_reason"] == "failed" for r in trials)
