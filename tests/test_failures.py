"""A sweep failing after its MLflow run opened, against a real MLflow store (sqlite): every open run is ended, the
traceback is kept in the log file, and the message is one line. The whole command is tested end to end in
tests/test_run_mlflow.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from raysweep import failures
from raysweep.mlflow_runs import PARENT, ROLE, STATUS, STOP_REASON, TRIAL_ID, SweepRun, end_run


@pytest.fixture()
def open_sweep(tmp_path) -> tuple[SweepRun, MlflowClient, dict[str, str]]:
    """A sweep run with three trial runs: one RUNNING (with a RUNNING seed run nested under it, as repeats make),
    one finished, one the callback ended `interrupted`."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("failing", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment_id, tags={ROLE: "sweep"}).info.run_id
    sweep_run = SweepRun(tracking_uri=uri, experiment_id=experiment_id, run_id=parent)
    runs = {name: client.create_run(experiment_id, tags={ROLE: "trial", PARENT: parent, TRIAL_ID: name}).info.run_id
            for name in ("running", "finished", "cut")}
    runs["seed"] = client.create_run(experiment_id, tags={ROLE: "seed", PARENT: runs["running"]}).info.run_id
    end_run(client, runs["finished"], status="completed", run_status="FINISHED", stop_reason="max_epochs")
    end_run(client, runs["cut"], status="interrupted", run_status="KILLED")
    return sweep_run, client, runs


def test_an_exception_ends_every_open_run_failed_and_keeps_the_traceback(open_sweep, tmp_path):
    sweep_run, client, runs = open_sweep
    log_file = tmp_path / "results" / failures.ERROR_LOG
    with pytest.raises(failures.SweepFailedError) as info, failures.failing_cleanly(sweep_run, log_file=log_file):
        raise OSError("[Errno 30] Read-only file system: 'results/trials.csv'")
    message = str(info.value)
    assert "\n" not in message and f"full traceback in {log_file}" in message
    assert "OSError: [Errno 30] Read-only file system" in message
    assert "Traceback (most recent call last)" in log_file.read_text() and "Read-only" in log_file.read_text()
    assert client.get_run(sweep_run.run_id).info.status == "FAILED"
    for name, expected in (("running", "FAILED"), ("seed", "FAILED"), ("cut", "FAILED"), ("finished", "FINISHED")):
        run = client.get_run(runs[name])
        assert run.info.status == expected, name
        assert run.data.tags[STOP_REASON] == ("max_epochs" if name == "finished" else "failed")
    statuses = [r.info.status for r in client.search_runs([sweep_run.experiment_id])]
    assert "RUNNING" not in statuses


def test_tunes_wrapped_traceback_is_told_by_its_last_line(open_sweep, tmp_path):
    sweep_run, *_ = open_sweep
    wrapped = ("Traceback (most recent call last):\n  File \"tune_controller.py\", line 1223, in _on_result\n"
               "RuntimeError: the storage went away\n")
    with pytest.raises(failures.SweepFailedError) as info, failures.failing_cleanly(
            sweep_run, log_file=tmp_path / failures.ERROR_LOG):
        raise Exception(wrapped)  # what ray.tune.TuneError carries for an error raised in a callback
    assert "the sweep failed after it started: RuntimeError: the storage went away;" in str(info.value)


def test_a_results_folder_that_cannot_be_written_sends_the_traceback_to_the_temp_folder(open_sweep):
    sweep_run, *_ = open_sweep
    with pytest.raises(failures.SweepFailedError) as info, failures.failing_cleanly(
            sweep_run, log_file=Path("/proc/forbidden") / failures.ERROR_LOG):
        raise RuntimeError("storage lost")
    where = Path(str(info.value).rsplit("full traceback in ", 1)[1])
    assert where.name == f"raysweep-error-{sweep_run.run_id}.log" and "storage lost" in where.read_text()
    where.unlink()


def test_ctrl_c_ends_open_runs_killed_and_goes_on_up(open_sweep, tmp_path):
    sweep_run, client, runs = open_sweep
    with pytest.raises(KeyboardInterrupt), failures.failing_cleanly(sweep_run, log_file=tmp_path / "x.log"):
        raise KeyboardInterrupt
    assert client.get_run(sweep_run.run_id).info.status == "KILLED"
    running = client.get_run(runs["running"])
    assert (running.info.status, running.data.tags[STATUS]) == ("KILLED", "interrupted")
    assert not (tmp_path / "x.log").exists()


def test_nothing_is_ended_when_the_block_succeeds(open_sweep, tmp_path):
    sweep_run, client, runs = open_sweep
    with failures.failing_cleanly(sweep_run, log_file=tmp_path / failures.ERROR_LOG):
        pass
    assert client.get_run(runs["running"]).info.status == "RUNNING"
    assert client.get_run(sweep_run.run_id).info.status == "RUNNING"
