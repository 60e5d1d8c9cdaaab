"""The summary at the end of a sweep: the best trial by the record's definition, the counts by status and stop reason,
where the results are, the command that opens this sweep's MLflow store, and after Ctrl-C only raysweep's advice."""

from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from raysweep.console import best_text, mlflow_ui_command, summary_lines, trial_counts
from raysweep.mlflow_runs import SweepRun
from raysweep.results import Outcome

RUN = SweepRun(tracking_uri="sqlite:////tmp/store/mlflow.db", experiment_id="3", run_id="abc123")
BEST = {"trial_id": "915279d2", "label": "adam lr=0.00555", "best_val_acc": 0.9375, "best_epoch": 3,
        "test_acc": 0.96381, "status": "completed", "stop_reason": "max_epochs", "run_id": "r1"}


def outcome(statuses: list[tuple[str, str]], *, best: dict | None) -> Outcome:
    table = pd.DataFrame([{"trial_id": f"t{i}", "status": s, "stop_reason": r} for i, (s, r) in enumerate(statuses)])
    return Outcome(results_dir=Path("/tmp/results/quickstart/run1"), table=table, best=best, sweep_run=RUN)


def test_the_best_trial_line_gives_its_label_best_value_epoch_and_test_accuracy():
    assert best_text(BEST) == "adam lr=0.00555 (915279d2): val_acc 0.9375 at epoch 3, test_acc 0.9638"


def test_without_a_label_or_best_epoch_the_best_trial_is_named_by_its_id():
    # Until results.Outcome.best carries the label and the epoch (issue #10), the line says what it has.
    best = {"trial_id": "915279d2", "best_val_acc": 0.9375, "val_acc": 0.93, "test_acc": 0.9638}
    assert best_text(best) == "915279d2: val_acc 0.9375, test_acc 0.9638"


def test_trials_are_counted_by_status_and_stop_reason():
    statuses = [("early_stopped", "asha")] * 6 + [("early_stopped", "patience"), ("completed", "max_epochs"),
                                                    ("diverged", "diverged")]
    table = outcome(statuses, best=BEST).table
    assert trial_counts(table) == "7 early_stopped (6 asha, 1 patience), 1 completed (1 max_epochs), 1 diverged"


def test_the_summary_says_where_trials_csv_and_the_report_are_and_how_to_open_mlflow():
    lines = summary_lines(outcome([("completed", "max_epochs")], best=BEST), seconds=75)
    assert lines[1] == "raysweep: 1 trial(s) in 1 min 15 s: 1 completed (1 max_epochs)"
    assert lines[2] == "best trial: adam lr=0.00555 (915279d2): val_acc 0.9375 at epoch 3, test_acc 0.9638"
    assert "trials: /tmp/results/quickstart/run1/trials.csv" in lines
    assert "report: /tmp/results/quickstart/run1/report/" in lines
    assert any(line.startswith("MLflow: ") and "ui --backend-store-uri sqlite:////tmp/store/mlflow.db" in line
               for line in lines)


def test_after_ctrl_c_only_the_resume_advice_is_given():
    lines = summary_lines(outcome([("interrupted", "interrupted")] * 2, best=None), seconds=5,
                          resume_command="raysweep-run sweeps/quickstart.py --resume")
    text = "\n".join(lines)
    assert lines[-1] == ("raysweep: interrupted with 2 trial(s) unfinished: continue them with --resume: "
                         "raysweep-run sweeps/quickstart.py --resume")
    assert "no trial succeeded" not in text and "Tuner.restore" not in text


def test_a_sweep_where_nothing_succeeded_says_so():
    lines = summary_lines(outcome([("failed", "failed"), ("diverged", "diverged")], best=None), seconds=5)
    assert "raysweep: no trial succeeded" in lines and not any("--resume" in line for line in lines)


def test_the_mlflow_command_opens_the_same_store_from_any_folder(tmp_path, monkeypatch):
    # A relative sqlite URI works only from the folder the sweep ran in; the printed command must work anywhere.
    monkeypatch.chdir(tmp_path)
    client = MlflowClient("sqlite:///mlflow.db")
    experiment_id = client.create_experiment("console")
    run_id = client.create_run(experiment_id).info.run_id
    command = mlflow_ui_command(SweepRun("sqlite:///mlflow.db", experiment_id, run_id))
    words = shlex.split(command)
    assert words[0].endswith("mlflow") and words[1:3] == ["ui", "--backend-store-uri"]
    monkeypatch.chdir(tmp_path.parent)
    assert MlflowClient(words[3]).get_run(run_id).info.experiment_id == experiment_id


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "http://127.0.0.1:5000/"])
def test_a_tracking_server_gets_the_page_of_the_sweep_run(uri):
    assert mlflow_ui_command(SweepRun(uri, "3", "abc123")) == "open http://127.0.0.1:5000/#/experiments/3/runs/abc123"
