"""Multi-node sweeps on a real Ray cluster on this machine: a head and three worker raylets started with `ray start`,
each on its own loopback address. The sweep command joins it with --address, as it would join a `ray up` cluster.

What this proves: trials spread over nodes; checkpoints and results land in shared storage (a local folder here, as
NFS would be; and S3 through a local moto server); a lost node's trial resumes from its checkpoint on a survivor;
quarter-GPU trials pack four to a (fake) GPU and say once each that they train on the CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.servers import RayCluster, answers, free_port, wait_for
from tests.sweep_runs import (
    NO_CUDA_WARNING,
    assert_each_trial_once_and_complete,
    assert_resumed_from_a_checkpoint,
    command,
    epochs_checkpointed,
    sweep_env,
    trial_results,
    trials_csv,
    write_sweep,
)

pytestmark = pytest.mark.timeout(900)  # each test includes its share of the cluster's start-up on a loaded machine

BIN = Path(sys.executable).parent  # the venv's `moto_server` entry point
# Each node on its own loopback address (see RayCluster), so Tune's `node_ip` in result.json names a trial's node.
HEAD_IP = "127.0.0.2"
WORKERS = {"a": ("127.0.0.3", ["--num-gpus=1"]), "b": ("127.0.0.4", []), "c": ("127.0.0.5", [])}
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}  # never ask 169.254.169.254 for credentials
BUCKET = "raysweep"


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory) -> Iterator[str | None]:
    """http://127.0.0.1:PORT of a moto S3 server holding an empty bucket, or None when moto is not installed."""
    if not (BIN / "moto_server").exists():
        yield None
        return
    import boto3  # a dependency of moto

    endpoint = f"http://127.0.0.1:{free_port()}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", endpoint.rsplit(":", 1)[1]],
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Any HTTP answer will do (moto's root answers 200 with a bucket listing).
        wait_for(lambda: answers(endpoint), timeout_s=60, what=f"moto S3 server at {endpoint}", process=server)
        boto3.client("s3", endpoint_url=endpoint, **_boto_credentials()).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture(scope="module")
def cluster(s3_endpoint) -> Iterator[RayCluster]:
    # Every node reaches the S3 server the way a node of a real cluster reaches a MinIO: through the AWS variables.
    env = {**os.environ, **(S3_ENV | {"AWS_ENDPOINT_URL_S3": s3_endpoint} if s3_endpoint else {})}
    local = RayCluster(env=env, head_ip=HEAD_IP)
    try:
        local.start_head("--num-cpus=0")  # no CPUs: the head runs no trial
        local.add_workers({name: (ip, ["--num-cpus=1", f'--resources={{"node_{name}": 1}}', *options])
                           for name, (ip, options) in WORKERS.items()})
        yield local
    finally:
        local.stop()
        left = local.ours()
        assert not left, f"processes of the test cluster still alive after stop: {left}"


def _boto_credentials() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def _driver(sweep_file: Path, folder: Path, *args: str, env: dict[str, str]) -> subprocess.Popen:
    """`python -m raysweep.run SWEEP --storage folder/results --address ...` in its own process group."""
    return subprocess.Popen(command(sweep_file, folder, *args), cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(driver: subprocess.Popen, *, timeout: float = 600) -> tuple[str, str]:
    try:
        return driver.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)


def _driver_env(folder: Path, cluster: RayCluster, **extra: str) -> dict[str, str]:
    return {**sweep_env(folder, snapshot_every_s=1), **{k: cluster.env[k] for k in cluster.env if k.startswith("AWS_")},
            "RAY_AUTH_MODE": "disabled", **extra}


# ---- several nodes, shared storage, one node lost mid-trial ----

# x 0.4-1.4 s (the machine's speed drifts): a trial outlasts by seconds the 1 s between the storage's snapshots the
# tests watch, also on a fast day (with 5 epochs of 0.4 s the S3 sweep finished before a snapshot showed it part-way).
EPOCHS = 10
SPREAD_SWEEP = f"""
SWEEP = Sweep(
    name="spread",
    dataset="synthetic",
    fixed={{"hidden": [256, 256], "optimizer": "adam", "batch_size": 8}},  # ~1.4 s per epoch on an idle core
    space={{"lr": loguniform(1e-4, 1e-3)}},
    searcher="random",
    scheduler="none",
    num_samples=3,  # one per 1-CPU worker node
    max_epochs={EPOCHS},
    gpu=0,  # CPU trials: "auto" would give each a quarter of node a's GPU and put them all on node a
    max_concurrent=3,  # Tune then asks for all three at once (with a searcher it otherwise queues one at a time)
)
"""


@pytest.fixture(scope="module")
def lost_node_sweep(cluster, tmp_path_factory) -> dict:
    """A sweep across the worker nodes during which node b or c (never a, the GPU node) is lost."""
    folder = tmp_path_factory.mktemp("spread")
    driver = _driver(write_sweep(folder, SPREAD_SWEEP), folder, "--address", cluster.address,
                     env=_driver_env(folder, cluster))
    killed: dict = {}

    def lose_the_node_of_a_trial_part_way() -> bool:
        # Where a trial runs shows in its result.json; how far it is, in its checkpoints (epochs_checkpointed).
        for trial, results in trial_results(folder, "spread").items():
            trial_dir, = (folder / "results" / "spread").glob(f"*/trainable_{trial}_*")
            epochs_done = epochs_checkpointed(trial_dir)
            node = cluster.node_at(results[0]["node_ip"]) if results else "a"
            # Its second checkpoint written means Tune registered its first (the trainable only trains on once the
            # driver has fetched the checkpoint of its last result), so there is one to resume from.
            if node != "a" and 2 <= epochs_done <= EPOCHS - 2:  # >= 2 epochs to go when seen, >= 1 when killed
                cluster.kill_node(node)
                killed.update(trial=trial, node=node, epochs_before=epochs_done)
                return True
        return False

    try:
        wait_for(lose_the_node_of_a_trial_part_way, timeout_s=400, what="a trial part-way on node b or c",
                 process=driver, every_s=0.2)
    finally:
        _, err = _finish(driver)
    assert driver.returncode == 0, err[-3000:]
    return {"folder": folder, "killed": killed, "results": trial_results(folder, "spread")}


def test_trials_of_one_sweep_run_on_several_nodes(lost_node_sweep, cluster):
    nodes = {cluster.node_at(r["node_ip"]) for results in lost_node_sweep["results"].values() for r in results}
    assert len(nodes) >= 2 and "head" not in nodes


def test_checkpoints_and_results_land_in_the_shared_storage(lost_node_sweep):
    run, = (lost_node_sweep["folder"] / "results" / "spread").iterdir()
    trial_dirs = [d for d in run.iterdir() if d.name.startswith("trainable_")]
    assert (run / "trials.csv").is_file() and list(run.glob("experiment_state-*.json"))
    assert len(trial_dirs) == 3
    rows = trials_csv(lost_node_sweep["folder"], "spread")
    assert sorted(r["trial_id"] for r in rows) == sorted(d.name.split("_")[1] for d in trial_dirs)
    for trial_dir in trial_dirs:
        results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        # Each epoch, in order; the lost node's trial may report one twice (assert_resumed_from_a_checkpoint).
        epochs = [r["epoch"] for r in results]
        assert epochs == sorted(epochs) and set(epochs) == set(range(1, EPOCHS + 1)), trial_dir.name
        checkpoints = sorted(trial_dir.glob("checkpoint_*"))
        assert checkpoints, trial_dir.name
        for checkpoint in checkpoints:  # checkpoint_00000N holds epoch N + 1, whichever node wrote it
            state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=False)
            assert state["epoch"] == int(checkpoint.name.split("_")[1]) + 1, checkpoint


def test_mlflow_record_of_a_multi_node_sweep_is_complete(lost_node_sweep):
    assert_each_trial_once_and_complete(lost_node_sweep["folder"], "spread", trials=3, epochs=EPOCHS)


def test_a_lost_nodes_trial_resumes_from_its_checkpoint_on_a_surviving_node(lost_node_sweep, cluster):
    killed = lost_node_sweep["killed"]
    results = lost_node_sweep["results"][killed["trial"]]
    nodes = [cluster.node_at(r["node_ip"]) for r in results]
    assert killed["epochs_before"] >= 2  # a registered checkpoint to resume from
    assert nodes[0] == killed["node"] and nodes[-1] != killed["node"]
    assert_resumed_from_a_checkpoint(results, epochs=EPOCHS, by="node_ip")


# ---- fractional (fake) GPUs ----

GPU_SWEEP = """
SWEEP = Sweep(
    name="quarters",
    dataset="synthetic",
    fixed={"hidden": [256, 256], "optimizer": "adam", "batch_size": 8},
    space={"lr": loguniform(1e-4, 1e-3)},
    searcher="random",
    scheduler="none",
    num_samples=4,
    # Node a starts its workers one at a time (one CPU): each trial must outlast the others' start-up, which took
    # 7 s here (12 epochs: ~22 s); with 3 epochs a fast CI machine finished the first trial before the fourth began.
    max_epochs=12,
    max_concurrent=4,  # Tune then starts all four at once (with a searcher it otherwise queues one at a time)
    gpu=0.25,  # four trials per GPU
    cpu=0.25,  # node a has one CPU for its four trials
)
"""


@pytest.fixture(scope="module")
def quarter_gpu_sweep(cluster, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("quarters")
    # Ray folds identical lines from several workers into one "[repeated Nx]" line; count each trial's own here.
    driver = _driver(write_sweep(folder, GPU_SWEEP), folder, "--address", cluster.address,
                     env=_driver_env(folder, cluster, RAY_DEDUP_LOGS="0"))
    out, err = _finish(driver)
    assert driver.returncode == 0, err[-3000:]
    return {"folder": folder, "output": out + err, "results": trial_results(folder, "quarters")}


def test_quarter_gpu_trials_run_four_at_a_time_on_one_gpu(quarter_gpu_sweep, cluster):
    results = quarter_gpu_sweep["results"]
    spans = [(r[-1]["timestamp"] - r[-1]["time_total_s"], r[-1]["timestamp"]) for r in results.values()]
    most_at_once = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert {cluster.node_at(r["node_ip"]) for rs in results.values() for r in rs} == {"a"}  # the only GPU node
    assert len(results) == 4 and most_at_once == 4


def test_a_trial_given_a_gpu_torch_cannot_see_warns_once_and_trains_on_the_cpu(quarter_gpu_sweep):
    warnings = [line for line in quarter_gpu_sweep["output"].splitlines() if NO_CUDA_WARNING in line]
    assert len(warnings) == 4 and all(f"ip={WORKERS['a'][0]})" in line for line in warnings)
    rows = trials_csv(quarter_gpu_sweep["folder"], "quarters")
    assert [r["status"] for r in rows] == ["completed"] * 4


def test_asking_more_cpus_per_trial_than_any_node_has_fails_at_once(cluster, tmp_path):
    sweep_file = write_sweep(tmp_path, GPU_SWEEP)
    done = subprocess.run(command(sweep_file, tmp_path, "--address", cluster.address, "--set", "cpu=2"), cwd=tmp_path,
                          env=_driver_env(tmp_path, cluster), capture_output=True, text=True, timeout=300)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("raysweep.run: error: `cpu` per trial must fit on one node, but "
                                                   "got cpu=2 and the largest node"), done.stderr
    assert not (tmp_path / "results").exists()  # no trial was ever queued


# ---- S3-compatible storage: checkpoints there, and --resume from there ----

S3_SWEEP = f"""
SWEEP = Sweep(
    name="ins3",
    dataset="synthetic",
    fixed={{"hidden": [256, 256], "optimizer": "adam", "batch_size": 8}},
    space={{"lr": loguniform(1e-4, 1e-3)}},
    searcher="random",
    scheduler="none",
    num_samples=2,
    max_epochs={EPOCHS},
    max_concurrent=1,  # the first trial is finished, the second part-way when the driver dies
)
"""


def _s3_client(endpoint: str):
    import boto3  # a dependency of moto

    return boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())


def _s3_keys(endpoint: str) -> list[str]:
    pages = _s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="sweeps/ins3/")
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _checkpoints_in_s3(endpoint: str) -> dict[str, int]:
    """Per trial id: the index of the newest checkpoint in the bucket (its epoch - 1)."""
    latest: dict[str, int] = {}
    for parts in (key.split("/") for key in _s3_keys(endpoint)):
        if parts[4:] and parts[4].startswith("checkpoint_") and parts[5:] == ["state.pt"]:
            trial = parts[3].split("_")[1]  # sweeps/ins3/<run>/trainable_<id>_.../checkpoint_00000N/state.pt
            latest[trial] = max(latest.get(trial, -1), int(parts[4].split("_")[1]))
    return latest


def _snapshot_in_s3(endpoint: str) -> dict[str, tuple[str, int]]:
    """Per trial id, from the newest experiment state in the bucket: its status, and the newest checkpoint it names
    (-1: none). This snapshot is all that --resume knows."""
    states = sorted(key for key in _s3_keys(endpoint) if key.rsplit("/", 1)[-1].startswith("experiment_state-"))
    if not states:
        return {}
    snapshot = json.loads(_s3_client(endpoint).get_object(Bucket=BUCKET, Key=states[-1])["Body"].read())
    found = {}
    for trial_json, runtime_json in snapshot["trial_data"]:
        trial, runtime = json.loads(trial_json), json.loads(runtime_json)
        manager = bytes.fromhex(runtime["checkpoint_manager"]["value"])  # Tune's checkpoint manager, cloudpickled
        found[trial["trial_id"]] = (trial["status"], max(map(int, re.findall(rb"checkpoint_(\d{6})", manager)),
                                                         default=-1))
    return found


@pytest.fixture(scope="module")
def s3_sweep(cluster, s3_endpoint, tmp_path_factory) -> dict:
    """A sweep with --storage s3://raysweep/sweeps whose driver is SIGKILLed part-way, then resumed with --resume."""
    if s3_endpoint is None:
        pytest.skip("moto[server] is not installed: no local S3 server")
    folder = tmp_path_factory.mktemp("ins3")
    sweep_file = write_sweep(folder, S3_SWEEP)
    options = ("--storage", f"s3://{BUCKET}/sweeps", "--address", cluster.address)
    driver = _driver(sweep_file, folder, *options, env=_driver_env(folder, cluster))
    killed: dict = {}

    def kill_once_the_bucket_holds_one_finished_and_one_part_way_trial() -> bool:
        # The experiment state must name a checkpoint of the running trial, but need not have caught up: it may name
        # one older than the bucket's newest, which raysweep must not have deleted (Tune's num_to_keep would have,
        # docs/RELIABILITY.md).
        snapshot = _snapshot_in_s3(s3_endpoint)
        stored = _checkpoints_in_s3(s3_endpoint)
        running = [trial for trial, (status, _) in snapshot.items() if status == "RUNNING"]
        if not ("TERMINATED" in {status for status, _ in snapshot.values()} and len(running) == 1
                and snapshot[running[0]][1] > -1 and stored.get(running[0], -1) < EPOCHS - 1):
            return False
        os.killpg(driver.pid, signal.SIGKILL)
        local = folder / "results"
        killed.update(trial=running[0], named=snapshot[running[0]][1], checkpoint=stored[running[0]],
                      local=sorted(p.name for p in local.rglob("*") if p.is_file()) if local.exists() else [])
        return True

    try:
        wait_for(kill_once_the_bucket_holds_one_finished_and_one_part_way_trial, timeout_s=400,
                 what="one trial finished, one part-way in the bucket", process=driver, every_s=0.2)
    finally:
        _finish(driver, timeout=60)
    resumed = _driver(sweep_file, folder, *options, "--resume", env=_driver_env(folder, cluster))
    out, err = _finish(resumed)
    assert resumed.returncode == 0, err[-3000:]
    return {"folder": folder, "killed": killed, "output": out + err, "checkpoints": _checkpoints_in_s3(s3_endpoint),
            "keys": _s3_keys(s3_endpoint)}


def test_a_sweep_on_s3_storage_keeps_its_checkpoints_and_state_in_the_bucket(s3_sweep):
    runs = {key.split("/")[2] for key in s3_sweep["keys"] if key.count("/") >= 3}
    run_files = {key.split("/")[3] for key in s3_sweep["keys"] if key.count("/") == 3}
    assert len(runs) == 1  # the resumed driver continued the killed one's run folder
    assert "tuner.pkl" in run_files and any(name.startswith("experiment_state-") for name in run_files)
    assert sorted(s3_sweep["checkpoints"].values()) == [EPOCHS - 1] * 2  # each trial's last epoch, in S3
    # Until the end, the driver's own trial log (trial_log.LOG_FILE, the record's source of truth) is all of the run
    # on the local disk: no trial folder, no checkpoint, no Tune state.
    assert set(s3_sweep["killed"]["local"]) <= {"trial_results.jsonl"}, s3_sweep["killed"]["local"]


def test_a_sweep_on_s3_storage_resumes_from_its_checkpoint_there_with_every_trial_once(s3_sweep):
    killed = s3_sweep["killed"]
    restored = [line for line in s3_sweep["output"].splitlines() if "Restored on" in line]
    assert len(restored) == 1  # the part-way trial; the finished one is not run again
    assert "filesystem=s3" in restored[0] and f"trainable_{killed['trial']}_" in restored[0]
    restored_from = int(re.search(r"checkpoint_(\d{6})", restored[0]).group(1))
    assert killed["named"] <= restored_from <= killed["checkpoint"]  # what the bucket's state named, or newer
    assert_each_trial_once_and_complete(s3_sweep["folder"], "ins3", trials=2, epochs=EPOCHS)


def test_an_s3_uri_may_name_its_endpoint_in_its_query(s3_sweep, s3_endpoint, monkeypatch):
    from raysweep import storage

    for key, value in S3_ENV.items():  # credentials only: the endpoint comes from the URI
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    query = f"?endpoint_override={s3_endpoint.removeprefix('http://')}&scheme=http"
    sweep_storage = storage.storage_uri(f"s3://{BUCKET}/sweeps{query}", "ins3")
    run, = {key.split("/")[2] for key in s3_sweep["keys"] if key.count("/") >= 3}
    assert sweep_storage == f"s3://{BUCKET}/sweeps/ins3{query}"
    assert storage.latest_run(sweep_storage) == run
