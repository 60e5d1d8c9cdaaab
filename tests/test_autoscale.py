"""Scaling from zero: a sweep asking for a GPU share starts on a head without a GPU, and Ray's autoscaler brings up
GPU workers for its trials. This is the path `ray up cluster.yaml` takes, which a fixed local cluster never exercises.

Ray 2.60's fake multi-node provider (`RAY_FAKE_CLUSTER=1`, provider `fake_multinode`) runs the real autoscaler on this
machine: when trials wait for a GPU it starts raylets that declare the resources of the node type it picked, here
cluster.yaml's GPU types at min_workers 0 (fake GPUs: torch sees no CUDA, so trials train on the CPU and say so).
The config is cluster.yaml's node types on the fake provider; the head, like cluster.yaml's, declares no CPU or GPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.servers import cluster_processes, free_port, stop_cluster
from tests.sweep_runs import NO_CUDA_WARNING, command, sweep_env, trial_results, trials_csv, write_sweep

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NODE_TYPE_EVENT = "Adding 1 node(s) of type gpu_"  # the autoscaler's event, which Ray prints on the driver
TRIALS, EPOCHS = 4, 3


def fake_cluster_config(*, gcs_address: str) -> dict:
    """cluster.yaml's worker types (GPU ones at min 0) on the fake provider, with fewer nodes for a 2-core machine."""
    real = yaml.safe_load((REPO / "cluster.yaml").read_text())
    workers = {name: {"resources": t["resources"], "node_config": {}, "min_workers": t["min_workers"],
                      "max_workers": 1}
               for name, t in real["available_node_types"].items() if name != real["head_node_type"]}
    assert workers and all(t["min_workers"] == 0 and t["resources"].get("GPU") for t in workers.values())
    return {
        "cluster_name": "raysweep-fake", "max_workers": len(workers), "upscaling_speed": 1.0,
        "idle_timeout_minutes": 10,  # no scale-down while the test runs
        # The provider starts each worker raylet in the autoscaler's process, joined to the head's GCS at this address.
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "auth": {"ssh_user": "ubuntu"}, "docker": {},
        "head_node_type": "ray.head.default",  # the fake provider's name for the head it did not start
        "available_node_types": {"ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                                 **workers},
        # Fields Ray's example.yaml fills in; the autoscaler reads them, and the pip wheel does not ship that file.
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
        "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


class FakeAutoscalingCluster:
    """A head with no CPU and no GPU, and the autoscaler with the fake provider. Every process it or the autoscaler
    starts inherits a marker in its environment, and stop() ends exactly those, by their ids."""

    def __init__(self) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="rsa", dir="/tmp"))  # unix socket paths must stay under ~107 chars
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAYSWEEP_TEST_CLUSTER": str(self.temp),
                    "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}  # seconds between its rounds
        self.env.pop("RAY_ADDRESS", None)

    def start(self) -> None:
        config = self.temp / "autoscaler.yaml"
        config.write_text(yaml.safe_dump(fake_cluster_config(gcs_address=self.address)))
        argv = [str(BIN / "ray"), "start", "--head", f"--port={self.port}", "--num-cpus=0", "--num-gpus=0",
                "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp / 'head'}", "--include-dashboard=false",
                f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                "--disable-usage-stats", f"--autoscaling-config={config}"]
        with open(self.temp / "head.log", "w") as log:
            started = subprocess.run(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, timeout=240)
        assert started.returncode == 0, (self.temp / "head.log").read_text()[-3000:]

    def ours(self) -> list[int]:
        return cluster_processes(self.temp)

    def stop(self) -> None:
        stop_cluster(self.temp)


# Samples the cluster twice a second from its own driver process: the GPUs of the live nodes and the GPU in use.
WATCHER = """
import json, sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
while True:
    nodes = [n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n["Alive"]]
    total, free = ray.cluster_resources().get("GPU", 0.0), ray.available_resources().get("GPU", 0.0)
    print(json.dumps({"node_gpus": nodes, "gpu_in_use": round(total - free, 4)}), flush=True)
    time.sleep(0.5)
"""

SWEEP = f"""
SWEEP = Sweep(
    name="from_zero",
    dataset="synthetic",
    fixed={{"hidden": [64], "optimizer": "adam", "lr": 1e-3}},
    # Four trials of four lengths (each batch size half the steps of the one before): they end one by one, so for a
    # while one to three of them hold a quarter GPU each.
    space={{"batch_size": choice([8, 16, 32, 64])}},
    searcher="grid",
    scheduler="none",
    num_samples=1,
    max_epochs={EPOCHS},
    max_concurrent={TRIALS},  # Tune asks for every trial's resources at once, so the autoscaler sees all the demand
    cpu=1,
)
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[FakeAutoscalingCluster]:
    fake = FakeAutoscalingCluster()
    try:
        fake.start()
        yield fake
    finally:
        fake.stop()
        left = fake.ours()
        assert not left, f"processes of the fake cluster still alive after stop: {left}"


def _env(folder: Path, cluster: FakeAutoscalingCluster) -> dict[str, str]:
    # The marker: a driver's own Ray processes, if any outlive it, are ended with the cluster's.
    return {**sweep_env(folder), "RAY_AUTH_MODE": "disabled", "RAY_DEDUP_LOGS": "0",
            "RAYSWEEP_TEST_CLUSTER": cluster.env["RAYSWEEP_TEST_CLUSTER"]}


@pytest.fixture(scope="module")
def sweep_from_zero(cluster, tmp_path_factory) -> dict:
    """The sweep with a quarter GPU per trial, started while no GPU node exists, and the cluster watched meanwhile."""
    folder = tmp_path_factory.mktemp("from_zero")
    env = _env(folder, cluster)
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, cluster.address], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        first = watcher.stdout.readline()  # the cluster as the sweep finds it
        assert first, "the watcher could not join the fake cluster"
        done = subprocess.run(command(write_sweep(folder, SWEEP), folder, "--address", cluster.address,
                                      "--set", "gpu=auto"),
                              cwd=folder, env=env, capture_output=True, text=True, timeout=420)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(watcher.pid, signal.SIGKILL)
        rest, _ = watcher.communicate()
    samples = [json.loads(line) for line in [first, *rest.splitlines()] if line.startswith("{")]
    return {"folder": folder, "done": done, "output": done.stdout + done.stderr, "samples": samples}


def test_a_gpu_sweep_starts_on_a_head_with_no_gpu_and_completes(sweep_from_zero):
    done, samples = sweep_from_zero["done"], sweep_from_zero["samples"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert samples[0]["node_gpus"] == [0.0]  # when the sweep started: the head alone, no GPU anywhere
    rows = trials_csv(sweep_from_zero["folder"], "from_zero")
    assert len(rows) == TRIALS and all(r["status"] == "completed" and int(r["epochs"]) == EPOCHS for r in rows)


def test_the_autoscaler_brings_up_gpu_workers_for_the_trials(sweep_from_zero):
    started = [line for line in sweep_from_zero["output"].splitlines() if NODE_TYPE_EVENT in line]
    assert started, sweep_from_zero["output"][-3000:]
    assert max(sum(s["node_gpus"]) for s in sweep_from_zero["samples"]) >= 1  # a GPU node joined while it ran


def test_each_trial_runs_with_its_quarter_gpu_share(sweep_from_zero):
    # Every trial was given a (fake) GPU: each trial says, from its worker, that torch sees no CUDA device. The fake
    # nodes share the head's session folder, so two log monitors forward each line: match the workers, not the lines.
    # A worker may run a second trial once its first is done (reuse_actors), so every trial's worker has warned.
    warnings = [line for line in sweep_from_zero["output"].splitlines() if NO_CUDA_WARNING in line]
    warned = {int(re.search(r"pid=(\d+)", line).group(1)) for line in warnings}
    workers = {trial: {r["pid"] for r in results} for trial, results in trial_results(sweep_from_zero["folder"],
                                                                                       "from_zero").items()}
    assert len(workers) == TRIALS and all(pids and pids <= warned for pids in workers.values()), (workers, warnings)
    # Ray accounted quarters: while one to three trials held a GPU, a fraction of one was in use.
    in_use = {s["gpu_in_use"] for s in sweep_from_zero["samples"]}
    assert in_use & {0.25, 0.5, 0.75}, sorted(in_use)


def test_a_trial_no_node_type_can_hold_fails_at_once_naming_the_largest_type(cluster, tmp_path):
    # cluster.yaml's largest type, gpu_4x, has 48 CPUs and none of its nodes is running: the check counts it anyway.
    done = subprocess.run(command(write_sweep(tmp_path, SWEEP), tmp_path, "--address", cluster.address,
                                  "--set", "gpu=auto", "--set", "cpu=64"),
                          cwd=tmp_path, env=_env(tmp_path, cluster), capture_output=True, text=True, timeout=300)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert lines == ["raysweep.run: error: `cpu` per trial must fit on one node, but got cpu=64 and the largest node "
                     "(running or that the autoscaler can start) has 48; trials would wait forever"]
