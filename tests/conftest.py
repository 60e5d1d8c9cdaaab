"""Fixtures shared by test files: one Ray cluster for the end-to-end sweeps that can share it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers import RayCluster, environment_kept


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """The address of a one-node Ray cluster that the slow end-to-end sweeps join with --address.

    Each sweep command otherwise starts and stops a local Ray of its own, seconds of both cores each time. Two CPUs,
    as a local run on the 2-core machines these tests were sized on. Sweeps whose subject is the driver's own local
    Ray (Ctrl-C, a killed driver) do not use it. Started on first use, its processes ended by their ids at the end.
    """
    cluster = RayCluster(env=dict(os.environ), head_ip="127.0.0.1")
    try:
        cluster.start_head("--num-cpus=2", "--num-gpus=0")
        yield cluster.address
    finally:
        cluster.stop()
        left = cluster.ours()
        assert not left, f"processes of the shared Ray cluster still alive after stop: {left}"


@pytest.fixture(autouse=True)
def _environment_kept() -> Iterator[None]:
    """Each test ends with the environment it began with, whatever a library it ran changed (see
    servers.environment_kept): one test's in-process Ray once made every later sweep on the shared cluster fail."""
    with environment_kept():
        yield


@pytest.fixture()
def sweep_run(tmp_path):
    """A sweep's parent run in a fresh local MLflow store (sqlite in tmp_path), as tracking.start_sweep_run makes."""
    from mlflow.tracking import MlflowClient

    from raysweep.mlflow_runs import ROLE, SweepRun, local_artifacts

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("e", artifact_location=local_artifacts(uri))
    parent = client.create_run(experiment_id, tags={ROLE: "sweep"}).info.run_id
    return SweepRun(tracking_uri=uri, experiment_id=experiment_id, run_id=parent)
