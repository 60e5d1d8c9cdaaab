"""Where the report command reads and writes: a local store must already exist, and the report goes into the reported
run's own results folder."""

from pathlib import Path

import pytest

from raysweep.report_paths import StoreNotFound, check_store_exists, results_folder


def test_a_missing_local_store_is_an_error_and_nothing_is_created(tmp_path):
    for uri in (f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "mlruns"), f"file://{tmp_path}/mlruns"):
        with pytest.raises(StoreNotFound, match=r"^no MLflow store at .*; pass --tracking-uri"):
            check_store_exists(uri)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_local_store_and_a_server_pass(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"")
    (tmp_path / "mlruns").mkdir()
    for uri in (f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "mlruns"), "http://127.0.0.1:5000"):
        check_store_exists(uri)


def test_the_results_folder_is_the_runs_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = str(tmp_path / "store" / "quickstart" / "2026-11-29_10-00-00")
    assert results_folder(sweep_key=local, experiment_name="quickstart", run_id="r1") == Path(local)
    # A remote storage keeps the run's name under ./results/<sweep>/, as raysweep.run wrote it there.
    remote = "s3://bucket/sweeps/quickstart/2026-11-29_10-00-00?endpoint_override=127.0.0.1:9000"
    assert results_folder(sweep_key=remote, experiment_name="quickstart", run_id="r1") == (
        tmp_path / "results" / "quickstart" / "2026-11-29_10-00-00")
    unkeyed = results_folder(sweep_key="", experiment_name="my sweep", run_id="r1")
    assert unkeyed == tmp_path / "results" / "my_sweep" / "r1"
