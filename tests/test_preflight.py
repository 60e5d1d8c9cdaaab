"""The checks before Ray starts: storage (a local folder and a real S3 server, moto on 127.0.0.1), --address, data.
Each failure is one line naming the option and the rule, and comes within its timeout instead of hanging."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from raysweep import preflight
from raysweep.sweep import Sweep

try:
    from tests.servers import free_port
except ImportError:
    from servers import free_port

MOTO = Path(sys.executable).parent / "moto_server"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def test_an_unwritable_storage_fails_naming_the_option():
    with pytest.raises(preflight.PreflightError) as info:
        preflight.check_storage("/proc/forbidden/results/sweep", option="/proc/forbidden/results")
    message = str(info.value)
    assert message.startswith("`--storage` must be a folder or URI that this machine can write to")
    assert "/proc/forbidden/results" in message and "\n" not in message


def test_a_writable_storage_passes_and_is_left_as_it_was(tmp_path):
    preflight.check_storage(str(tmp_path / "results" / "sweep"), option=str(tmp_path / "results"))
    assert list(tmp_path.iterdir()) == []  # neither the probe nor the folders it needed are left


def test_a_storage_folder_that_exists_keeps_what_it_holds(tmp_path):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "kept.txt").write_text("x")
    preflight.check_storage(str(tmp_path / "sweep"), option=str(tmp_path))
    assert [p.name for p in (tmp_path / "sweep").iterdir()] == ["kept.txt"]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    if not MOTO.exists():
        pytest.skip("moto[server] is not installed: no local S3 server")
    import boto3  # a dependency of moto

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            assert time.monotonic() < deadline and server.poll() is None, f"moto did not start; see {log}"
            time.sleep(0.2)
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket="raysweep")
        yield endpoint
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _s3_keys(endpoint: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    return [item["Key"] for item in client.list_objects_v2(Bucket="raysweep").get("Contents", [])]


def test_an_s3_storage_gets_a_probe_written_and_deleted(s3_endpoint, monkeypatch):
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    uri = f"s3://raysweep/sweeps/demo?endpoint_override={s3_endpoint.removeprefix('http://')}&scheme=http"
    preflight.check_storage(uri, option=uri)
    assert [key for key in _s3_keys(s3_endpoint) if preflight.PROBE_PREFIX in key] == []


def test_an_s3_bucket_that_does_not_exist_fails_naming_the_option(s3_endpoint, monkeypatch):
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    uri = f"s3://no-such-bucket/sweeps?endpoint_override={s3_endpoint.removeprefix('http://')}&scheme=http"
    with pytest.raises(preflight.PreflightError, match="`--storage` must be a folder or URI"):
        preflight.check_storage(uri, option=uri, timeout_s=20)


def test_an_s3_endpoint_that_never_answers_fails_within_the_timeout(monkeypatch):
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    with socket.socket() as silent:  # listens, never accepts: every request waits
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        uri = f"s3://raysweep/sweeps?endpoint_override=127.0.0.1:{silent.getsockname()[1]}&scheme=http"
        started = time.monotonic()
        with pytest.raises(preflight.PreflightError, match="no answer within 2 s"):
            preflight.check_storage(uri, option=uri, timeout_s=2)
        assert time.monotonic() - started < 10


def test_an_address_nobody_listens_on_fails_at_once_naming_the_option():
    started = time.monotonic()
    with pytest.raises(preflight.PreflightError) as info:
        preflight.check_address(f"127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 5
    assert str(info.value).startswith("`--address` must be HOST:PORT of a running Ray cluster")


def test_an_address_that_never_answers_fails_within_the_timeout():
    with socket.socket() as full, socket.socket() as first:  # a backlog of one, taken: later SYNs go unanswered
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        first.connect(full.getsockname())
        started = time.monotonic()
        with pytest.raises(preflight.PreflightError, match="no answer within 2 s"):
            preflight.check_address(f"127.0.0.1:{full.getsockname()[1]}", timeout_s=2)
        assert time.monotonic() - started < 10


def test_an_address_that_answers_passes():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        preflight.check_address(f"127.0.0.1:{listening.getsockname()[1]}")
        preflight.check_address(f"ray://127.0.0.1:{listening.getsockname()[1]}")


def test_an_address_without_a_port_fails_naming_the_option():
    with pytest.raises(preflight.PreflightError, match="`--address` must be HOST:PORT"):
        preflight.check_address("my-cluster")


def test_the_data_is_checked_against_its_real_size():
    with pytest.raises(preflight.PreflightError, match="`subset` must be an int in"):
        preflight.load_data(Sweep(name="d", dataset="digits", subset=100_000), data_dir=None)


def test_every_check_passes_for_a_good_sweep_and_names_what_the_run_needs(tmp_path):
    ready = preflight.check(Sweep(name="good", dataset="digits"), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                            storage_option=str(tmp_path / "results"), address=None, data_dir=None, resume=False)
    assert ready.storage_path == str(tmp_path / "results" / "good")
    assert len(ready.dataset.x_train) + len(ready.dataset.x_val) == 1438 and ready.previous is None
    assert not (tmp_path / "mlflow.db").exists()  # checking MLflow creates no store


def test_resume_without_an_earlier_run_fails_naming_the_option(tmp_path):
    with pytest.raises(preflight.PreflightError, match="`--resume` needs an earlier run"):
        preflight.check(Sweep(name="none", dataset="digits"), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                        storage_option=str(tmp_path / "results"), address=None, data_dir=None, resume=True)
