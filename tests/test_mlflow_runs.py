"""The MLflow vocabulary of the record, against a real local store: where the store is, whether it answers, and the
find / list / end calls that the sweep run and the trial callback share."""

import os
import socket

import pytest
from mlflow.tracking import MlflowClient

from raysweep.mlflow_runs import (
    PARENT,
    ROLE,
    STATUS,
    STOPPED_EPOCH,
    TRIAL_ID,
    SweepRun,
    TrackingUnavailableError,
    check_reachable,
    child_runs,
    end_run,
    find_trial_run_id,
    local_artifacts,
    local_store_folder,
    one_line,
    open_store_in_background,
    param_value,
    resolve_tracking_uri,
    search_runs,
    short_http,
)


@pytest.fixture()
def store(sweep_run):
    return MlflowClient(sweep_run.tracking_uri), sweep_run


def add_trial(client: MlflowClient, sweep_run: SweepRun, trial_id: str) -> str:
    tags = {ROLE: "trial", PARENT: sweep_run.run_id, TRIAL_ID: trial_id}
    return client.create_run(sweep_run.experiment_id, tags=tags).info.run_id


def test_the_explicit_uri_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    assert resolve_tracking_uri("sqlite:///given.db") == "sqlite:///given.db"
    assert resolve_tracking_uri(None) == "sqlite:///from-env.db"


def test_a_server_that_does_not_answer_is_unavailable_in_one_line():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TrackingUnavailableError, match=rf"MLflow server http://127.0.0.1:{port} did not answer") as e:
        check_reachable(f"http://127.0.0.1:{port}", timeout_s=1.0)
    assert "\n" not in str(e.value)


def test_a_local_store_in_a_folder_that_cannot_be_written_is_unavailable(tmp_path):
    check_reachable(f"sqlite:///{tmp_path}/ok.db")  # writable: no error
    with pytest.raises(TrackingUnavailableError, match=r"needs a writable folder"):
        check_reachable("sqlite:////proc/forbidden/mlflow.db")


def test_local_stores_name_their_folder_and_keep_artifacts_beside_the_database(tmp_path):
    assert local_store_folder(f"sqlite:///{tmp_path}/m.db") == tmp_path
    assert local_store_folder(f"file://{tmp_path}/mlruns") == tmp_path / "mlruns"
    assert local_store_folder("http://127.0.0.1:5000") is None
    assert local_artifacts(f"sqlite:///{tmp_path}/m.db") == (tmp_path / "mlartifacts").as_uri()
    assert local_artifacts("http://127.0.0.1:5000") is None  # a server chooses its own


def test_short_http_sets_short_timeouts_and_restores_the_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    with short_http():
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "5"
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "120"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_a_trials_run_is_found_by_its_trial_id_among_the_parents_children(store):
    client, sweep_run = store
    first, second = add_trial(client, sweep_run, "t1"), add_trial(client, sweep_run, "t2")
    assert find_trial_run_id(client, sweep_run, "t2") == second
    assert find_trial_run_id(client, sweep_run, "t1") == first
    assert find_trial_run_id(client, sweep_run, "t3") is None
    assert [r.info.run_id for r in search_runs(client, sweep_run.experiment_id, f"tags.`{ROLE}` = 'trial'")] == [
        second, first]  # newest first


def test_child_runs_filter_by_status_and_ending_a_run_tags_why(store):
    client, sweep_run = store
    running, ended = add_trial(client, sweep_run, "t1"), add_trial(client, sweep_run, "t2")
    end_run(client, ended, "completed", "FINISHED", stopped_epoch=4)
    assert [r.info.run_id for r in child_runs(client, sweep_run, status="RUNNING", on_error=[])] == [running]
    assert len(child_runs(client, sweep_run, status=None, on_error=[])) == 2
    run = client.get_run(ended)
    assert run.info.status == "FINISHED"
    assert run.data.tags[STATUS] == "completed" and run.data.tags[STOPPED_EPOCH] == "4"


def test_listing_children_of_an_unreachable_store_reports_instead_of_raising():
    errors: list[str] = []
    gone = SweepRun(tracking_uri="http://127.0.0.1:9", experiment_id="1", run_id="r")
    with short_http():
        assert child_runs(MlflowClient(gone.tracking_uri), gone, status="RUNNING", on_error=errors) == []
    assert len(errors) == 1 and errors[0].startswith("listing child runs left RUNNING")


def test_param_values_are_cut_to_mlflows_limit_and_errors_to_one_short_line():
    assert len(param_value("x" * 7000)) == 6000 and param_value((64, 32)) == "(64, 32)"
    assert one_line(ValueError("two\nlines")) == "two lines"
    assert one_line(ValueError("y" * 300), limit=50) == "y" * 47 + "..."
    assert one_line(ValueError()) == "ValueError"


def test_the_store_opened_in_the_background_is_created_and_the_one_the_client_then_uses(tmp_path):
    import sqlite3

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    thread = open_store_in_background(uri)
    thread.join(timeout=120)
    assert not thread.is_alive()
    with sqlite3.connect(tmp_path / "mlflow.db") as db:  # MLflow's tables, made by the thread
        tables = {name for (name,) in db.execute("select name from sqlite_master where type = 'table'")}
    assert {"experiments", "runs", "metrics"} <= tables
    assert MlflowClient(uri).get_experiment_by_name("Default") is not None


def test_a_store_that_cannot_be_opened_in_the_background_leaves_the_error_to_the_sweeps_own_client(tmp_path,
                                                                                                 monkeypatch):
    import threading

    escaped = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    (tmp_path / "blocked").write_text("a file where the store's folder would be")
    uri = f"sqlite:///{tmp_path}/blocked/mlflow.db"
    thread = open_store_in_background(uri)
    thread.join(timeout=120)
    assert not thread.is_alive() and not escaped
    with pytest.raises(Exception, match="blocked"):
        MlflowClient(uri).search_experiments()
