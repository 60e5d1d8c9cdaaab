"""cluster.yaml: Ray's own launcher validation, the node types, the installs, the auth token and MLflow's binding.

Validation runs the same two steps `ray up` runs before it talks to AWS (`prepare_config`, then `validate_config`
against ray/autoscaler/ray-schema.json), so a misspelt key fails here. Nothing touches the network or AWS; the one
server started (MLflow, from the head's own start command) listens on 127.0.0.1 and is stopped by its process group.
"""

import copy
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from mlflow import MlflowClient
from packaging.version import Version
from ray._private.authentication import authentication_token_setup
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.servers import answers, free_port, stop_process_group, wait_for

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
TORCH_CEILING = Version("2.14.1")  # pyproject.toml: never above 2.14.1
# How the head's start command finds its private address; the MLflow test swaps it for loopback.
NODE_IP_LOOKUP = "$(python -c 'import ray.util; print(ray.util.get_node_ip_address())')"
COMMAND_LISTS = ("setup_commands", "head_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")


@pytest.fixture
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def validate_like_ray_up(config: dict) -> None:
    """What `ray up` does to the file before the AWS-specific bootstrap (ray/autoscaler/_private/commands.py)."""
    validate_config(prepare_config(copy.deepcopy(config)))


def worker_types(config: dict) -> dict:
    return {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}


def all_commands(config: dict) -> list[str]:
    return [cmd for key in COMMAND_LISTS for cmd in config.get(key, [])]


def mlflow_start_command(config: dict) -> str:
    (cmd,) = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    return cmd


def test_cluster_yaml_passes_rays_own_launcher_validation(config):
    validate_like_ray_up(config)


def rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(
            lambda c: rename(c, "worker_start_ray_commands", "worker_start_ray_command"),
            "'worker_start_ray_command' was unexpected",
            id="top-level-key",
        ),
        pytest.param(
            lambda c: rename(c["available_node_types"]["gpu_1x"], "min_workers", "min_worker"),
            "'min_worker' was unexpected",
            id="node-type-key",
        ),
        pytest.param(lambda c: rename(c["auth"], "ssh_user", "ssh_usr"), "'ssh_usr' was unexpected", id="auth-key"),
        # Node resources must be whole numbers; fractions belong in a trial's request.
        pytest.param(
            lambda c: c["available_node_types"]["gpu_1x"]["resources"].update(GPU=0.5),
            "0.5 is not of type 'integer'",
            id="fractional-node-gpu",
        ),
        pytest.param(
            lambda c: c.update(head_node_type="haed"),
            "`head_node_type` must be one of `available_node_types`",
            id="unknown-head-type",
        ),
    ],
)
def test_a_broken_copy_of_the_config_is_rejected_by_the_same_validator(config, mutate, message):
    broken = copy.deepcopy(config)
    mutate(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)) as info:
        validate_like_ray_up(broken)
    assert message in str(info.value)


def test_provider_uses_only_keys_that_rays_schema_names(config):
    # Ray's schema lets `provider` hold any key, so a misspelt `region` would pass it and be ignored.
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    known = set(schema["properties"]["provider"]["properties"])
    assert set(config["provider"]) <= known, sorted(set(config["provider"]) - known)


def test_there_is_an_autoscaled_1_gpu_and_an_autoscaled_4_gpu_worker_type(config):
    gpu_counts = {}
    for name, node_type in worker_types(config).items():
        resources = node_type["resources"]
        # Declared, not left to AWS auto-detection, so fractional-GPU trials pack the same way everywhere.
        assert resources.get("CPU", 0) >= 1 and resources.get("GPU", 0) >= 1, f"{name} declares {resources}"
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"], f"{name}: min/max workers"
        assert node_type["max_workers"] >= 1, f"{name} can never start"
        gpu_counts[resources["GPU"]] = node_type["node_config"]["InstanceType"]
    assert gpu_counts.get(1) == "g5.xlarge"
    assert gpu_counts.get(4) == "g5.12xlarge"


def test_per_type_worker_limits_bind_before_the_global_one(config):
    assert config["max_workers"] >= sum(t["max_workers"] for t in worker_types(config).values())


def test_head_is_a_cpu_node_that_runs_no_trials(config):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["node_config"]["InstanceType"].startswith("m5.")
    assert head["resources"] == {"CPU": 0}


def test_every_node_type_names_a_cuda_image_and_workers_can_reach_s3(config):
    for name, node_type in config["available_node_types"].items():
        # Unset or "latest_dlami" means Ray's default AMI: Ubuntu 18.04 with CUDA 11.2, too old for torch 2.14.
        image = node_type["node_config"].get("ImageId", "")
        assert image not in ("", "latest_dlami"), f"{name} has no ImageId"
        assert "deeplearning" in image or image.startswith("ami-"), f"{name}: {image}"
    for name, node_type in worker_types(config).items():
        assert "IamInstanceProfile" in node_type["node_config"], f"{name} cannot write to s3:// storage"


def test_every_node_installs_raysweep_with_the_pinned_ray_and_torch(config):
    assert config["file_mounts"].get("~/raysweep") == "."
    # Node types may override the common setup; none does, so every node installs the same thing.
    assert all("worker_setup_commands" not in t for t in config["available_node_types"].values())
    (install,) = [c for c in config["setup_commands"] if "pip install -e ~/raysweep" in c]
    ray_pin = re.search(r'"ray\[[^\]]*\]==([\w.]+)"', install)
    torch_pin = re.search(r'"torch==([\w.]+)"', install)
    assert ray_pin and ray_pin.group(1) == ray.__version__, f"cluster Ray must match this Ray: {install}"
    assert torch_pin and Version(torch_pin.group(1)) <= TORCH_CEILING, install
    (venv,) = [c for c in config["setup_commands"] if "uv venv" in c]
    assert re.search(r"--python \d+\.\d+\.\d+ ", venv), f"Python must be pinned to an exact version: {venv}"


def test_every_node_gets_the_heads_auth_token_under_the_names_ray_reads(config):
    # The names this config relies on, as the installed Ray spells them.
    assert authentication_token_setup.AUTH_MODE_ENV_VAR == "RAY_AUTH_MODE"
    token_path = authentication_token_setup._get_default_token_path().relative_to(Path.home())
    assert f"~/{token_path}" in config["cluster_synced_files"]
    assert any("ray get-auth-token --generate" in c for c in config["head_setup_commands"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in config[key] if "ray start" in c]
        assert "RAY_AUTH_MODE=token ray start" in start, start


def test_nothing_listens_on_all_interfaces_and_no_port_but_ssh_is_opened(config):
    for cmd in all_commands(config):
        assert "0.0.0.0" not in cmd and "--dashboard-host" not in cmd, cmd
    mlflow = mlflow_start_command(config)
    assert f"HEAD_IP={NODE_IP_LOOKUP}" in mlflow and '--host "$HEAD_IP"' in mlflow
    assert "sqlite:///$HOME/mlflow/mlflow.db" in mlflow
    # Ray adds its intra-cluster and SSH rules itself; anything listed here would be opened on top of them.
    assert config["provider"]["security_group"]["IpPermissions"] == []


def test_every_shell_command_parses(config):
    for cmd in all_commands(config):
        result = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert result.returncode == 0, f"{cmd}\n{result.stderr}"


def test_bashrc_lines_are_added_once_and_export_what_the_driver_needs(config, tmp_path):
    edits = [c for c in config["setup_commands"] + config["head_setup_commands"] if ">> ~/.bashrc" in c]
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    for _ in range(2):  # setup commands re-run on every `ray up`
        for cmd in edits:
            subprocess.run(["bash", "-c", cmd], env=env, check=True)
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "tracking_uri").write_text("http://10.0.0.7:5000\n")
    shown = subprocess.run(
        ["bash", "-c", 'source ~/.bashrc; echo "$RAY_AUTH_MODE|$MLFLOW_TRACKING_URI|$PATH"'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert shown.startswith(f"token|http://10.0.0.7:5000|{tmp_path}/venv/bin:")
    assert (tmp_path / ".bashrc").read_text().count("export RAY_AUTH_MODE=token") == 1


def test_head_start_command_runs_one_mlflow_server_however_often_it_runs(config, tmp_path):
    command = mlflow_start_command(config)
    assert command.count(NODE_IP_LOOKUP) == 1 and "--port 5000" in command
    port = free_port()
    # Loopback and a free port instead of the head's private address and 5000; the rest runs as written.
    local = command.replace(NODE_IP_LOOKUP, "127.0.0.1").replace("5000", str(port))
    # One uvicorn worker instead of MLflow's default 4: the same server, started faster on a 2-core machine.
    env = {"HOME": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "MLFLOW_WORKERS": "1"}
    shells = []

    def run_once() -> str:
        # Own session, so the nohup'd server stays in a process group whose id is this shell's pid.
        shell = subprocess.Popen(
            ["bash", "-c", local], env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        shells.append(shell)
        return shell.communicate(timeout=60)[0]

    uri = f"http://127.0.0.1:{port}"
    try:
        run_once()
        log = tmp_path / "mlflow" / "server.log"
        try:
            wait_for(lambda: answers(f"{uri}/health", timeout_s=2), timeout_s=90, what=f"MLflow at {uri}")
        except TimeoutError as error:
            pytest.fail(f"{error}; its log:\n{log.read_text() if log.exists() else '(none)'}")
        assert "MLflow already running" in run_once()
        with pytest.raises(ProcessLookupError):
            os.killpg(shells[1].pid, 0)  # the second run left no process behind
        assert (tmp_path / "mlflow" / "tracking_uri").read_text().strip() == uri
        # The server keeps its record in the sqlite file the command names (the head's disk), not elsewhere.
        MlflowClient(uri).create_experiment("kept_on_the_head")
        with sqlite3.connect(tmp_path / "mlflow" / "mlflow.db") as db:
            names = {name for (name,) in db.execute("SELECT name FROM experiments")}
        assert "kept_on_the_head" in names
    finally:
        for shell in shells:
            stop_process_group(shell)
