"""The sweep report, rebuilt from a real MLflow store (sqlite under tmp_path) holding a hand-made sweep record."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from raysweep import report
from raysweep.mlflow_runs import GIVEN

EXPERIMENT = "optimizers_demo"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (optimizer, lr, status, per-epoch (train_loss, val_loss, train_acc, val_acc)); epochs count from 1.
TRIALS = [
    ("adam", "0.001", "completed", [(1.0, 1.1, 0.60, 0.55), (0.6, 0.7, 0.80, 0.75), (0.4, 0.5, 0.90, 0.85)]),
    ("adam", "0.01", "early_stopped", [(1.2, 1.3, 0.50, 0.45)]),
    ("sgd", "0.001", "completed", [(2.0, 2.0, 0.30, 0.30), (1.5, 1.6, 0.50, 0.48), (1.2, 1.3, 0.60, 0.58)]),
    ("sgd", "0.01", "diverged", [(3.0, 3.5, 0.20, 0.15), (1e9, math.inf, 0.10, 0.10), (math.nan, math.nan, 0.1, 0.1)]),
    ("adam", "0.1", "failed", []),  # crashed before its first epoch: no metrics at all
]


def _log_trial(client: MlflowClient, experiment_id: str, parent_id: str, index: int, trial: tuple) -> str:
    optimizer, lr, status, epochs = trial
    run = client.create_run(experiment_id, run_name=f"{optimizer} lr={lr}", start_time=2000 + index, tags={
        "raysweep.role": "trial", "mlflow.parentRunId": parent_id, "raysweep.status": status,
        "raysweep.stopped_epoch": str(len(epochs)), "raysweep.trial_id": f"train_fn_{index:05d}"})
    params = {"optimizer": optimizer, "lr": lr, "batch_size": "64", "hidden": "128", "regularizer": "l2",
              "regularizer.alpha": "0.0001"}
    if optimizer == "sgd":  # a conditional param: only SGD trials have a momentum
        params["optimizer.momentum"] = "0.9"
    metrics = [Metric(key, value, 1000 * epoch, epoch)
               for epoch, values in enumerate(epochs, start=1)
               for key, value in zip(("train_loss", "val_loss", "train_acc", "val_acc"), values, strict=True)]
    metrics += [Metric("epoch_time_s", 2.5, 1000 * e, e) for e in range(1, len(epochs) + 1)]
    metrics += [Metric("lr", float(lr), 1000 * e, e) for e in range(1, len(epochs) + 1)]
    if index == 0:  # the best trial alone was evaluated on the test split
        metrics += [Metric("test_loss", 0.45, 9000, len(epochs)), Metric("test_acc", 0.84, 9000, len(epochs))]
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    client.set_terminated(run.info.run_id, "FAILED" if status == "failed" else "FINISHED")
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """One older sweep run with a single trial, then the latest sweep run with the five TRIALS."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    old = client.create_run(experiment_id, run_name="old", start_time=1000, tags={"raysweep.role": "sweep"})
    _log_trial(client, experiment_id, old.info.run_id, 9, ("rmsprop", "0.1", "completed", [(1, 1, 0.5, 0.5)]))
    # Where Ray Tune kept the run, as raysweep.run tags it; its results folder is this (local) path.
    sweep_key = str(root / "results" / EXPERIMENT / "2026-11-29_10-00-00")
    parent = client.create_run(experiment_id, run_name="sweep", start_time=1500,
                               tags={"raysweep.role": "sweep", "raysweep.sweep_key": sweep_key})
    client.log_param(parent.info.run_id, "searched", json.dumps(["optimizer", "lr"]))
    children = [_log_trial(client, experiment_id, parent.info.run_id, i, t) for i, t in enumerate(TRIALS)]
    return {"uri": uri, "parent": parent.info.run_id, "old_parent": old.info.run_id, "children": children,
            "results": Path(sweep_key)}


@pytest.fixture(scope="module")
def record(store) -> report.SweepRecord:
    return report.collect(experiment_name=EXPERIMENT, tracking_uri=store["uri"])


@pytest.fixture(scope="module")
def written(record, tmp_path_factory) -> list[Path]:
    return report.write_report(record, out_dir=tmp_path_factory.mktemp("report"))


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def test_collect_reads_the_latest_sweep_run_and_one_summary_row_per_trial(record, store):
    assert record.parent_run_id == store["parent"]
    assert list(record.summary.run_id) == store["children"]
    assert record.searched == ("optimizer", "lr")


def test_collect_reads_an_older_sweep_run_when_given_its_id(store):
    record = report.collect(experiment_name=EXPERIMENT, tracking_uri=store["uri"], parent_run_id=store["old_parent"])
    assert record.summary.optimizer.tolist() == ["rmsprop"]
    assert record.summary.label.tolist() == ["rmsprop l2"]  # nothing varies: optimizer and regularizer name it


def test_summary_holds_epochs_status_wall_time_and_final_metrics(record):
    rows = record.summary.set_index(record.summary.optimizer + " " + record.summary.lr.astype(str))
    assert rows.loc["adam 0.001", ["status", "epochs", "wall_time_s"]].tolist() == ["completed", 3, 7.5]
    assert rows.loc["adam 0.01", ["status", "epochs"]].tolist() == ["early_stopped", 1]
    assert rows.loc["adam 0.001", "final_val_acc"] == pytest.approx(0.85)
    assert rows.loc["adam 0.001", "best_val_acc"] == pytest.approx(0.85)
    assert rows.loc["adam 0.001", "test_acc"] == pytest.approx(0.84)
    assert math.isnan(rows.loc["sgd 0.001", "test_acc"])
    assert rows.loc["sgd 0.01", "status"] == "diverged"
    assert math.isnan(rows.loc["sgd 0.01", "final_val_loss"])
    assert rows.loc["sgd 0.01", "best_val_acc"] == pytest.approx(0.15)
    assert rows.loc["adam 0.1", ["status", "epochs", "wall_time_s"]].tolist() == ["failed", 0, 0.0]


def test_params_come_back_typed_and_infinity_survives_the_sql_store(record):
    assert record.summary.lr.tolist() == [0.001, 0.01, 0.001, 0.01, 0.1]
    assert record.summary["optimizer.momentum"].isna().tolist() == [True, True, False, False, True]
    history = record.history
    diverged = history[(history.label == record.summary.label.iloc[3]) & (history.metric == "val_loss")]
    assert diverged.value.iloc[1] == math.inf


def test_labels_name_only_the_varying_searched_params(record):
    assert record.summary.label.tolist() == ["adam lr=1e-3", "adam lr=0.01", "sgd lr=1e-3", "sgd lr=0.01",
                                             "adam lr=0.1"]






def test_labels_leave_out_the_defaults_of_settings_a_trial_was_not_given(store):
    # A conditional space: rho exists under rmsprop only, but every trial's params hold every setting, so the adam
    # trials hold rho's default (0.9), which one rmsprop trial also drew.
    client = MlflowClient(tracking_uri=store["uri"])
    experiment_id = client.create_experiment("conditional")
    parent = client.create_run(experiment_id, tags={"raysweep.role": "sweep"}).info.run_id
    client.log_param(parent, "searched", json.dumps(["optimizer", "lr", "optimizer.rho"]))
    for index, (optimizer, lr, rho) in enumerate([("adam", "0.001", "0.9"), ("rmsprop", "0.001", "0.9"),
                                                  ("rmsprop", "0.01", "0.95"), ("adam", "0.01", "0.9")]):
        given = "lr,optimizer" + (",optimizer.rho" if optimizer == "rmsprop" else "")
        run = client.create_run(experiment_id, start_time=index, tags={
            "raysweep.role": "trial", "raysweep.status": "completed", "mlflow.parentRunId": parent,
            "raysweep.trial_id": f"t{index}", GIVEN: given})
        client.log_batch(run.info.run_id, metrics=[Metric("val_acc", 0.5, 0, 1)], params=[
            Param("optimizer", optimizer), Param("lr", lr), Param("optimizer.rho", rho), Param("batch_size", "32")])
    record = report.collect(experiment_name="conditional", tracking_uri=store["uri"])
    assert record.summary.label.tolist() == ["adam lr=1e-3", "rmsprop lr=1e-3 rho=0.9", "rmsprop lr=0.01 rho=0.95",
                                             "adam lr=0.01"]
    assert record.summary["optimizer.rho"].tolist() == [0.9, 0.9, 0.95, 0.9]  # the params themselves stay as logged


def test_searched_params_default_to_those_that_vary_when_the_sweep_run_does_not_list_them(store):
    client = MlflowClient(tracking_uri=store["uri"])
    experiment_id = client.create_experiment("no_searched_param")
    parent = client.create_run(experiment_id, tags={"raysweep.role": "sweep"})
    for batch_size in ("32", "256"):
        run = client.create_run(experiment_id, tags={"raysweep.role": "trial", "raysweep.status": "completed",
                                                     "mlflow.parentRunId": parent.info.run_id})
        client.log_batch(run.info.run_id, metrics=[Metric("val_acc", 0.5, 0, 1)],
                         params=[Param("optimizer", "adam"), Param("batch_size", batch_size)])
    record = report.collect(experiment_name="no_searched_param", tracking_uri=store["uri"])
    assert record.searched == ("batch_size",)
    assert sorted(record.summary.label) == ["batch_size=256", "batch_size=32"]


def test_every_chart_is_a_non_empty_png(written):
    names = {p.name for p in written}
    expected = {"summary.csv", "training_time.png", "final_val_loss.png", "final_val_acc.png",
                "learning_curves.png", "final_val_acc_vs_optimizer.png", "final_val_acc_vs_lr.png"}
    assert expected <= names
    assert all(_is_png(p) for p in written if p.suffix == ".png")


def test_one_convergence_plot_per_trial(written, record):
    convergence = sorted(p.name for p in written if p.parent.name == "convergence")
    assert convergence == sorted(["adam_lr_1e-3.png", "adam_lr_0.01.png", "sgd_lr_1e-3.png", "sgd_lr_0.01.png",
                                  "adam_lr_0.1.png"])
    assert all(_is_png(p) for p in written if p.parent.name == "convergence")


def test_summary_csv_has_one_row_per_trial_with_params_and_status(written):
    table = pd.read_csv(next(p for p in written if p.name == "summary.csv"))
    assert len(table) == len(TRIALS)
    assert {"optimizer", "lr", "batch_size", "status", "epochs", "wall_time_s", "final_val_acc"} <= set(table)


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(report.__file__).parents[1])}
    return subprocess.run([sys.executable, "-m", "raysweep.report", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_rebuilds_the_report_from_mlflow_and_logs_it_to_the_sweep_run(store, tmp_path):
    result = _run_cli(EXPERIMENT, "--tracking-uri", store["uri"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = store["results"] / "report"  # the reported run's own results folder, beside its trials.csv
    assert f"files to {out}\n" in result.stdout  # it says where it wrote
    # Two runs of the sweep are recorded: it says which one it reported, and how to choose the other.
    assert (f"reporting sweep run {store['parent']}, the latest of 2 runs of '{EXPERIMENT}' (choose another with "
            "--parent-run-id)") in result.stdout
    assert not (tmp_path / "results").exists()
    assert len(pd.read_csv(out / "summary.csv")) == len(TRIALS)
    assert _is_png(out / "learning_curves.png")
    client = MlflowClient(tracking_uri=store["uri"])
    logged = {a.path for a in client.list_artifacts(store["parent"], "report")}
    assert {"report/summary.csv", "report/learning_curves.png", "report/convergence"} <= logged
    assert len(client.list_artifacts(store["parent"], "report/convergence")) == len(TRIALS)
    assert client.list_artifacts(store["old_parent"]) == []


def test_cli_reports_an_unknown_experiment_in_one_line_and_exits_2(store, tmp_path, capfd):
    code = report.main(["no_such_sweep", "--tracking-uri", store["uri"], "--out", str(tmp_path / "out")])
    err = capfd.readouterr().err  # file-descriptor level: log lines from MLflow would show up here too
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "no_such_sweep" in err
    assert not (tmp_path / "out").exists()


def test_cli_reports_an_experiment_without_trial_runs_in_one_line_and_exits_2(store, tmp_path, capfd):
    MlflowClient(tracking_uri=store["uri"]).create_experiment("never_ran")
    code = report.main(["never_ran", "--tracking-uri", store["uri"], "--out", str(tmp_path / "out")])
    err = capfd.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "never_ran" in err


# ---------------------------------------------------------------- the helpers the study notebooks read a sweep with

def test_collect_keeps_the_sweep_run_itself(record, store):
    assert record.sweep_run.info.run_id == store["parent"]
    assert json.loads(record.sweep_run.data.params["searched"]) == ["optimizer", "lr"]


def test_param_gives_one_typed_value_per_trial_and_nan_where_none_was_logged(record):
    assert record.param("lr").tolist() == [0.001, 0.01, 0.001, 0.01, 0.1]
    assert record.param("optimizer.momentum").isna().tolist() == [True, True, False, False, True]
    assert len(record.param("patience")) == len(TRIALS) and record.param("patience").isna().all()


def test_param_finds_a_param_named_like_a_summary_column():
    summary = pd.DataFrame({"run_id": ["r0"], "epochs": [3], "param.epochs": [10]})
    record = report.SweepRecord(summary=summary, history=pd.DataFrame(), searched=("epochs",))
    assert record.param("epochs").tolist() == [10]


def test_curves_hold_each_trials_metrics_per_epoch_with_inf_kept(record):
    curves = record.curves()
    assert curves.loc["adam lr=1e-3", "val_acc"].to_dict() == {1: 0.55, 2: 0.75, 3: 0.85}
    assert curves.loc[("sgd lr=0.01", 2), "val_loss"] == math.inf
    assert "adam lr=0.1" not in curves.index.get_level_values("label")  # the failed trial logged no epoch


def test_relabelled_names_trials_in_summary_and_history_and_numbers_repeats(record, store):
    renamed = record.relabelled(["a", "a", "b", "a", "c"])
    assert renamed.summary.label.tolist() == ["a", "a #2", "b", "a #3", "c"]
    second = renamed.history[renamed.history.run_id == store["children"][1]]
    assert set(second.label) == {"a #2"}
    assert record.summary.label.iloc[0] == "adam lr=1e-3"  # the record it came from is left as it was




def test_cli_reports_a_misspelt_experiment_with_the_closest_name_and_those_that_exist(store, capfd):
    code = report.main(["optimizer_demo", "--tracking-uri", store["uri"], "--no-log"])
    err = capfd.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"no MLflow experiment named 'optimizer_demo' at {store['uri']}; did you mean `{EXPERIMENT}`? " in err
    assert EXPERIMENT in err.strip().split("experiments there: ")[1].split(", ")


@pytest.mark.parametrize("uri", ["sqlite:///{tmp}/no_store.db", "{tmp}/no_mlruns", "file://{tmp}/no_mlruns"])
def test_cli_never_creates_an_empty_store(tmp_path, capfd, uri):
    uri = uri.format(tmp=tmp_path)
    code = report.main([EXPERIMENT, "--tracking-uri", uri])
    err = capfd.readouterr().err
    assert code == 2 and err.startswith(f"raysweep.report: error: no MLflow store at {uri}")
    assert list(tmp_path.iterdir()) == []


def test_cli_without_a_store_in_the_current_folder_creates_none(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert report.main([EXPERIMENT]) == 2
    assert "no MLflow store at" in capfd.readouterr().err and list(tmp_path.iterdir()) == []


def test_a_run_recorded_without_its_storage_key_gets_a_folder_of_its_own(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert report.main([EXPERIMENT, "--tracking-uri", store["uri"], "--parent-run-id", store["old_parent"],
                        "--no-log"]) == 0
    assert (tmp_path / "results" / EXPERIMENT / store["old_parent"] / "report" / "summary.csv").is_file()


def test_comparison_reads_back_the_seeds_table_the_sweep_run_holds_and_none_without_one(tmp_path):
    from raysweep import stats

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("seeded", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment_id, run_name="sweep", tags={"raysweep.role": "sweep"}).info.run_id
    for index, trial in enumerate(TRIALS[:3]):
        _log_trial(client, experiment_id, parent, index, trial)
    record = report.collect(experiment_name="seeded", tracking_uri=uri)
    assert report.comparison(record, tracking_uri=uri) is None  # a sweep run without one: a search
    seeds = pd.DataFrame({"config": ["adam", "adam", "adam", "sgd", "sgd", "sgd"], "seed": [0, 1, 2] * 2,
                          "best_val_acc": [0.90, 0.92, 0.91, 0.80, 0.85, 0.82]})
    table = stats.comparison_table(seeds)
    (tmp_path / "report").mkdir()
    table.to_csv(tmp_path / "report" / "comparison.csv", index=False)
    client.log_artifact(parent, str(tmp_path / "report" / "comparison.csv"), artifact_path="report")
    read = report.comparison(record, tracking_uri=uri)
    assert list(read.config) == ["adam", "sgd"] and list(read.best_val_acc_n) == [3, 3]
    assert read.best_val_acc_mean.tolist() == pytest.approx([0.91, 0.8233333], abs=1e-6)
    assert stats.format_table(read) == stats.format_table(table)
