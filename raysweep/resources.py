"""What a cluster can give a trial: the largest node it has or can start, whether a trial fits on it, and the GPU
share a trial asks for (`gpu="auto"`).

A trial trains on one device, so it asks for at most one GPU; a fraction packs several trials onto one GPU. With
`gpu="auto"` a trial asks for AUTO_GPU_SHARE of a GPU when the cluster has a GPU or its autoscaler can start a node
with one, and for none otherwise: the same sweep file runs on a laptop and on `ray up cluster.yaml`.

The autoscaler's node types count as well as the live nodes, because a `ray up` cluster's GPU workers may be scaled
to zero when the sweep starts: those types are read from the config file the autoscaler runs with. On a `ray up` head
that is ~/ray_bootstrap_config.yaml; Ray's fake multi-node provider (`RAY_FAKE_CLUSTER=1 ray start --head
--autoscaling-config=FILE`) keeps them in FILE, which only the monitor process's command line names (Ray 2.60 puts
no copy in the GCS: `ray._private.state.state.get_cluster_config()` is None there). Both are found on the head, where
the driver runs; a driver elsewhere sees the live nodes only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysweep.sweep import SweepError

# A quarter of a GPU per trial: four trials per GPU. Why four:
# - GPU memory: a raysweep trial (an MLP or a small conv autoencoder, batches of at most a few hundred images, the
#   data set held once as uint8) peaks well under 2 GB, so four fit in any GPU of 8 GB or more (24 GB on the A10G of
#   cluster.yaml's nodes); memory does not bind, compute and CPU do.
# - CPU per trial: cluster.yaml's gpu_1x node has 4 vCPU per GPU, so four 1-CPU trials fill its CPUs and its GPU
#   together; gpu_4x (48 vCPU, 4 GPU) takes 16 such trials.
# - Overlap: a small model's kernels leave the GPU idle while its trial runs Python (optimizer steps, evaluation,
#   checkpoints, reports to Tune); with four trials one trial's GPU work fills another's CPU-side gaps.
# bench/gpu_check.py measures trial-epochs per hour at gpu=1, 0.5 and 0.25 to check this choice on a real GPU.
AUTO_GPU_SHARE = 0.25
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")  # where `ray up` leaves the autoscaler's config on the head
# The autoscaler's process, v1 (the default) or v2 (RAY_enable_autoscaler_v2=1); ray/_private/services.py in Ray 2.60.
MONITOR_SCRIPTS = ("autoscaler/_private/monitor.py", "autoscaler/v2/monitor.py")


class InfeasibleError(Exception):
    """The cluster can never give a trial what the sweep asks for."""


@dataclass(frozen=True)
class Capacity:
    """The most CPUs and GPUs of any one node, running or that the autoscaler can start."""

    cpu: float
    gpu: float


# ------------------------------------------------------------------------------------------ the rules of a request
def check_gpu_request(gpu: Any) -> None:
    """`gpu` is "auto" or a number in [0, 1]: a trial uses one device, and fractions pack trials onto a GPU."""
    if gpu == "auto":
        return
    if isinstance(gpu, bool) or not isinstance(gpu, int | float) or math.isnan(gpu):
        raise SweepError(f'`gpu` must be "auto" or a number in [0, 1] per trial, but got gpu={gpu!r}')
    if gpu < 0:
        raise SweepError(f"`gpu` must be >= 0 per trial, but got gpu={gpu:g}")
    if gpu > 1:
        raise SweepError(
            "`gpu` must be at most 1 per trial (a trial uses one device; fractions pack trials onto a GPU), "
            f"but got gpu={gpu:g}"
        )


def trial_gpu(gpu: float | str, *, capacity: Capacity) -> float:
    """The GPU share each trial asks Ray for: `gpu` itself, or for "auto" AUTO_GPU_SHARE if any node has or can
    have a GPU, else 0."""
    if gpu == "auto":
        return AUTO_GPU_SHARE if capacity.gpu > 0 else 0.0
    return float(gpu)


def check_feasible(*, cpu: float, gpu: float, capacity: Capacity) -> None:
    """Raise InfeasibleError if no node, running or startable, can ever host one trial: Ray would leave it pending
    forever instead of failing."""
    for name, need, best in (("cpu", cpu, capacity.cpu), ("gpu", gpu, capacity.gpu)):
        if need > best:
            raise InfeasibleError(
                f"`{name}` per trial must fit on one node, but got {name}={need:g} and the largest node "
                f"(running or that the autoscaler can start) has {best:g}; trials would wait forever"
            )


# --------------------------------------------------------------------------------------- what the cluster offers
def largest_node(nodes: Iterable[Mapping[str, float]]) -> Capacity:
    """The most CPUs and the most GPUs of any one node (each from its own best node: a trial needs both on one node,
    but Ray's node types keep CPU and GPU together, and a finer check would not change the answer for them)."""
    nodes = list(nodes)
    return Capacity(cpu=max((float(n.get("CPU", 0)) for n in nodes), default=0.0),
                    gpu=max((float(n.get("GPU", 0)) for n in nodes), default=0.0))


def node_types(config: Mapping[str, Any]) -> list[dict[str, float]]:
    """Resources of each node type an autoscaler config can start, those at min_workers 0 included. A type with
    max_workers 0 (the head's, usually) starts no node and is left out; the head itself is a live node anyway."""
    types = config.get("available_node_types") or {}
    return [dict(t.get("resources") or {}) for t in types.values() if (t.get("max_workers", 1) or 0) > 0]


def autoscaler_config_files(*, gcs_address: str | None, proc: Path = Path("/proc"),
                            bootstrap: Path = BOOTSTRAP_CONFIG) -> list[Path]:
    """The autoscaler config files of the cluster at `gcs_address` that this machine can read: the one its monitor
    process was started with (`--autoscaling-config=FILE`, a fake multi-node cluster's only copy), and a `ray up`
    head's ~/ray_bootstrap_config.yaml."""
    found = []
    for cmdline in proc.glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:  # a process that ended while we looked, or one we may not read
            continue
        if not any(arg.endswith(MONITOR_SCRIPTS) for arg in argv):
            continue
        options = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
        if "autoscaling-config" in options and (gcs_address is None or options.get("gcs-address") == gcs_address):
            found.append(Path(options["autoscaling-config"]).expanduser())
    bootstrap = bootstrap.expanduser()
    if bootstrap.is_file() and bootstrap not in found:
        found.append(bootstrap)
    return [path for path in found if path.is_file()]


def scalable_node_types(*, gcs_address: str | None, proc: Path = Path("/proc"),
                        bootstrap: Path = BOOTSTRAP_CONFIG) -> list[dict[str, float]]:
    """Resources of every node type this cluster's autoscaler can start, or [] on a fixed or local cluster."""
    import yaml  # a dependency of Ray; JSON (what ray.cluster_utils writes) is YAML too

    types = []
    for path in autoscaler_config_files(gcs_address=gcs_address, proc=proc, bootstrap=bootstrap):
        types += node_types(yaml.safe_load(path.read_text()) or {})
    return types


def cluster_capacity() -> Capacity:
    """The largest node of the Ray cluster this process is connected to (after ray.init), counting the node types its
    autoscaler can start."""
    import ray

    live = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    return largest_node(live + scalable_node_types(gcs_address=ray.get_runtime_context().gcs_address))
