"""raysweep.resources: the GPU request rules, gpu="auto", and the largest node counting autoscaler node types at zero.

No Ray here: fake node lists, fake autoscaler configs and a fake /proc. tests/test_autoscale.py runs the real path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from raysweep import resources
from raysweep.resources import Capacity, InfeasibleError
from raysweep.sweep import SweepError

REPO = Path(__file__).resolve().parents[1]
GCS = "10.0.0.5:6379"
MONITOR = "/venv/lib/python3.11/site-packages/ray/autoscaler/_private/monitor.py"


# ---- the request ----

def test_more_than_one_gpu_per_trial_is_rejected_with_the_rule():
    with pytest.raises(SweepError) as error:
        resources.check_gpu_request(2)
    assert str(error.value) == ("`gpu` must be at most 1 per trial (a trial uses one device; fractions pack trials "
                                "onto a GPU), but got gpu=2")


@pytest.mark.parametrize("gpu", [1.5, 4])
def test_any_gpu_request_above_one_is_rejected(gpu):
    with pytest.raises(SweepError, match=r"^`gpu` must be at most 1 per trial"):
        resources.check_gpu_request(gpu)


@pytest.mark.parametrize("gpu", ["auto", 0, 0.25, 0.5, 1, 1.0])
def test_auto_and_shares_up_to_one_gpu_are_accepted(gpu):
    resources.check_gpu_request(gpu)  # raises nothing


@pytest.mark.parametrize(("gpu", "rule"), [(-0.25, "`gpu` must be >= 0"), ("half", '`gpu` must be "auto" or a number'),
                                          (True, '`gpu` must be "auto" or a number'),
                                          (float("nan"), '`gpu` must be "auto" or a number')])
def test_a_gpu_request_that_is_not_a_share_names_the_field_and_the_rule(gpu, rule):
    with pytest.raises(SweepError) as error:
        resources.check_gpu_request(gpu)
    assert str(error.value).startswith(rule) and "\n" not in str(error.value)


# ---- gpu="auto" ----

def test_auto_gives_a_quarter_gpu_where_a_node_has_or_can_have_a_gpu():
    assert resources.trial_gpu("auto", capacity=Capacity(cpu=4, gpu=1)) == 0.25


def test_auto_gives_no_gpu_on_a_cluster_that_can_never_have_one():
    assert resources.trial_gpu("auto", capacity=Capacity(cpu=2, gpu=0)) == 0.0


def test_a_number_is_the_share_asked_for_whatever_the_cluster():
    assert resources.trial_gpu(0.5, capacity=Capacity(cpu=2, gpu=0)) == 0.5
    assert resources.trial_gpu(0, capacity=Capacity(cpu=4, gpu=4)) == 0.0


# ---- feasibility ----

def test_a_trial_larger_than_every_node_is_infeasible_with_the_rule():
    with pytest.raises(InfeasibleError) as error:
        resources.check_feasible(cpu=1, gpu=1, capacity=Capacity(cpu=8, gpu=0))
    assert str(error.value) == ("`gpu` per trial must fit on one node, but got gpu=1 and the largest node (running or "
                                "that the autoscaler can start) has 0; trials would wait forever")


def test_a_trial_as_large_as_the_largest_node_is_feasible():
    resources.check_feasible(cpu=4, gpu=1, capacity=Capacity(cpu=4, gpu=1))  # raises nothing


def test_too_many_cpus_per_trial_is_infeasible():
    with pytest.raises(InfeasibleError, match=r"^`cpu` per trial must fit on one node, but got cpu=6 .* has 4;"):
        resources.check_feasible(cpu=6, gpu=0, capacity=Capacity(cpu=4, gpu=1))


def test_the_largest_node_takes_cpu_and_gpu_each_from_the_nodes():
    nodes = [{"CPU": 2.0, "memory": 1e9}, {"CPU": 4.0, "GPU": 1.0}, {"CPU": 48.0, "GPU": 4.0}]
    assert resources.largest_node(nodes) == Capacity(cpu=48, gpu=4)
    assert resources.largest_node([]) == Capacity(cpu=0, gpu=0)


# ---- node types the autoscaler can start ----

def test_cluster_yamls_gpu_types_count_although_they_may_be_at_zero():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    types = resources.node_types(config)
    gpu_types = [name for name, t in config["available_node_types"].items() if t["resources"].get("GPU")]
    assert all(config["available_node_types"][name]["min_workers"] == 0 for name in gpu_types)
    assert {"CPU": 48, "GPU": 4} in types and {"CPU": 4, "GPU": 1} in types
    # The head declares no GPU, so what a sweep sees on a fresh `ray up` head comes from these types alone.
    head_alone = resources.largest_node([config["available_node_types"]["head"]["resources"]])
    with_types = resources.largest_node([config["available_node_types"]["head"]["resources"], *types])
    assert head_alone.gpu == 0 and with_types == Capacity(cpu=48, gpu=4)


def test_a_node_type_with_max_workers_zero_starts_no_node_and_does_not_count():
    config = {"available_node_types": {"ray.head.default": {"resources": {"CPU": 0}, "max_workers": 0},
                                       "gpu_1x": {"resources": {"CPU": 4, "GPU": 1}, "min_workers": 0,
                                                  "max_workers": 2},
                                       "big_off": {"resources": {"CPU": 96, "GPU": 8}, "max_workers": 0}}}
    assert resources.node_types(config) == [{"CPU": 4, "GPU": 1}]


def _fake_process(proc: Path, pid: int, argv: list[str]) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cmdline").write_bytes(("\0".join(argv) + "\0").encode())


def _fake_multinode_config(folder: Path) -> Path:
    """A config as ray.cluster_utils.AutoscalingCluster writes it for the fake multi-node provider (JSON)."""
    path = folder / "fake_cluster.json"
    path.write_text(json.dumps({
        "cluster_name": "fake", "provider": {"type": "fake_multinode"}, "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "gpu_1x": {"resources": {"CPU": 4, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 1},
        },
    }))
    return path


def test_a_fake_multinode_clusters_node_types_are_read_from_its_monitors_config(tmp_path):
    config = _fake_multinode_config(tmp_path)
    proc = tmp_path / "proc"
    _fake_process(proc, 4242, ["/venv/bin/python", "-u", MONITOR, "--logs-dir=/tmp/ray/logs", f"--gcs-address={GCS}",
                               f"--autoscaling-config={config}", "--monitor-ip=10.0.0.5"])
    _fake_process(proc, 4243, ["/venv/bin/python", "-u", "/somewhere/log_monitor.py", f"--gcs-address={GCS}",
                               f"--autoscaling-config={tmp_path / 'not_a_monitor.yaml'}"])
    types = resources.scalable_node_types(gcs_address=GCS, proc=proc, bootstrap=tmp_path / "absent.yaml")
    assert types == [{"CPU": 4, "GPU": 1}]
    assert resources.largest_node([{"CPU": 0}, *types]).gpu == 1


def test_autoscaler_v2s_monitor_names_its_config_too(tmp_path):
    proc = tmp_path / "proc"
    _fake_process(proc, 4242, ["python", "-u", "/venv/lib/python3.11/site-packages/ray/autoscaler/v2/monitor.py",
                               f"--gcs-address={GCS}", f"--autoscaling-config={_fake_multinode_config(tmp_path)}"])
    types = resources.scalable_node_types(gcs_address=GCS, proc=proc, bootstrap=tmp_path / "absent.yaml")
    assert types == [{"CPU": 4, "GPU": 1}]


def test_the_monitor_of_another_cluster_on_the_machine_is_not_ours(tmp_path):
    proc = tmp_path / "proc"
    _fake_process(proc, 4242, ["python", MONITOR, "--gcs-address=10.0.0.9:6379",
                               f"--autoscaling-config={_fake_multinode_config(tmp_path)}"])
    assert resources.scalable_node_types(gcs_address=GCS, proc=proc, bootstrap=tmp_path / "absent.yaml") == []


def test_a_ray_up_heads_bootstrap_config_counts(tmp_path):
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text((REPO / "cluster.yaml").read_text())
    (tmp_path / "proc").mkdir()
    types = resources.scalable_node_types(gcs_address=GCS, proc=tmp_path / "proc", bootstrap=bootstrap)
    assert resources.largest_node(types) == Capacity(cpu=48, gpu=4)


def test_a_local_or_fixed_cluster_has_no_node_types_to_scale_to(tmp_path):
    (tmp_path / "proc").mkdir()
    assert resources.scalable_node_types(gcs_address=GCS, proc=tmp_path / "proc",
                                         bootstrap=tmp_path / "absent.yaml") == []
