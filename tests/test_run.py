"""The sweep command end to end: real Ray, real MLflow store, real data. Each sweep runs as a subprocess.

Most sweeps join the session's shared one-node Ray cluster (conftest.ray_address) instead of starting a Ray of their
own. The drivers that are interrupted (Ctrl-C) or killed start their own local Ray, as `make demo` does: what happens
to it is part of what those tests cover; the runs that resume them join the shared cluster."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from tests.servers import wait_for
from tests.sweep_runs import (
    REPO,
    SHARED_DATA,
    assert_each_trial_once_and_complete,
    assert_resumed_from_a_checkpoint,
    command,
    epochs_checkpointed,
    result_lines,
    run_sweep,
    saved_statuses,
    sweep_env,
    trial_results,
    trials_csv,
    write_sweep,
)

SWEEP_FILES = sorted((REPO / "sweeps").glob("*.py"))
NEEDS_FILES = ("mnist", "fashion_mnist", "cifar10")


@pytest.mark.parametrize("sweep_file", SWEEP_FILES, ids=[p.stem for p in SWEEP_FILES])
def test_every_sweep_file_runs_smoke_end_to_end(sweep_file, tmp_path, ray_address):
    text = sweep_file.read_text()
    if any(f'dataset="{name}"' in text for name in NEEDS_FILES) and not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: no offline copy of the sweep's data set")
    done = run_sweep(sweep_file, tmp_path, "--smoke", "--data-dir", str(SHARED_DATA) if SHARED_DATA.is_dir() else ".",
                     address=ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = trials_csv(tmp_path, sweep_file.stem if "name=" not in text else _sweep_name(text))
    assert len(rows) == 2
    assert "best trial" in done.stdout


def _sweep_name(text: str) -> str:
    return text.split('name="', 1)[1].split('"', 1)[0]


ASHA_SWEEP = """
SWEEP = Sweep(
    name="asha",
    dataset="digits",
    fixed={"hidden": [64], "optimizer": "momentum", "batch_size": 32},
    # Every rate but 10 trains, and the smaller the weaker: val_acc after epoch 1 (ASHA's first rung) is ~0.92 at
    # 0.1, ~0.55 at 0.003, ~0.15 at 3e-4 and 1e-4, which climb to only ~0.49 and ~0.22 in 6 epochs. 10 diverges in
    # its first epoch. A grid starts its trials in this order: the strong reach each rung first.
    space={"lr": choice([0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001, 10.0])},
    searcher="grid",
    scheduler="asha",
    grace_period=1,
    reduction_factor=2,
    max_epochs=6,
    num_samples=1,
    max_concurrent=2,
)
"""
ASHA_RUNGS = (1, 2, 4)  # grace_period x reduction_factor^k below max_epochs: the only epochs where ASHA stops a trial


@pytest.fixture(scope="module")
def asha_run(tmp_path_factory, ray_address):
    folder = tmp_path_factory.mktemp("asha")
    done = run_sweep(write_sweep(folder, ASHA_SWEEP), folder, address=ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, trials_csv(folder, "asha")


def test_asha_stops_weak_trials_first(asha_run):
    folder, rows = asha_run
    trained = [r for r in rows if float(r["lr"]) != 10.0]
    last = {trial: results[-1] for trial, results in trial_results(folder, "asha").items()}  # as the trial reported
    # Neither divergence nor patience (off here) ended any of them: what stops one short of max_epochs is ASHA.
    assert len(rows) == 8 and not any(last[r["trial_id"]]["diverged"] or last[r["trial_id"]]["early_stopped"]
                                      for r in trained)
    stopped = [r for r in trained if int(r["epochs"]) < 6]
    assert stopped and all(r["status"] == "early_stopped" and int(r["epochs"]) in ASHA_RUNGS for r in stopped)
    weakest = sorted(trained, key=lambda r: float(r["lr"]))[:2]  # 1e-4 and 3e-4 meet a cutoff of >= 0.8 at epoch 1
    assert [int(r["epochs"]) for r in weakest] == [1, 1]
    assert sum(int(r["epochs"]) for r in rows) < 8 * 6
    best = max(trained, key=lambda r: float(r["best_val_acc"]))
    assert int(best["epochs"]) == 6


def test_diverging_trial_stops_in_its_first_epoch_and_is_never_best(asha_run):
    _, rows = asha_run
    diverged = [r for r in rows if float(r["lr"]) == 10.0]
    assert [(r["status"], r["epochs"]) for r in diverged] == [("diverged", "1")]
    best = [r for r in rows if r.get("test_acc")]
    assert len(best) == 1 and float(best[0]["lr"]) != 10.0


def test_mlflow_record_has_one_child_run_per_trial_with_a_curve_per_epoch(asha_run):
    folder, rows = asha_run
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name("asha")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("raysweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("raysweep.role") == "trial"]
    assert len(parents) == 1 and len(children) == len(rows)
    by_trial = {r["trial_id"]: r for r in rows}
    for child in children:
        row = by_trial[child.data.tags["raysweep.trial_id"]]
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.data.tags["raysweep.status"] == row["status"]
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert steps == list(range(1, int(row["epochs"]) + 1))
        assert float(child.data.params["lr"]) == float(row["lr"])
    parent = parents[0]
    assert parent.data.tags["raysweep.best_run_id"] in {c.info.run_id for c in children}
    assert 0.5 < parent.data.metrics["best_test_acc"] <= 1.0


def test_each_trial_keeps_only_its_best_and_its_latest_checkpoint(asha_run):
    folder, rows = asha_run
    trial_dirs = list((folder / "results" / "asha").glob("*/trainable_*"))
    assert len(trial_dirs) == len(rows)
    for trial_dir in trial_dirs:
        results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        val_acc = [r["val_acc"] for r in results]
        best_epoch = val_acc.index(max(val_acc)) + 1  # Tune keeps the first of equal scores
        kept = sorted(int(c.name.split("_")[1]) + 1 for c in trial_dir.glob("checkpoint_*"))
        assert kept == sorted({best_epoch, len(results)}), trial_dir.name  # checkpoint_00000N holds epoch N + 1


SLOW_SWEEP = """
SWEEP = Sweep(
    name="{name}",
    dataset="synthetic",
    fixed={{"hidden": [512, 512], "optimizer": "adam", "batch_size": 8}},
    space={{"lr": loguniform(1e-4, 1e-3)}},
    searcher="random",
    scheduler="none",
    num_samples=4,
    max_epochs=6,
    max_concurrent=2,
)
"""


def test_resume_after_the_driver_is_killed_runs_every_trial_exactly_once(tmp_path, ray_address):
    sweep_file = write_sweep(tmp_path, SLOW_SWEEP.format(name="resumed"))
    driver = subprocess.Popen(command(sweep_file, tmp_path), cwd=tmp_path, env=sweep_env(tmp_path, snapshot_every_s=1),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # Kill it once Tune's saved state holds one trial as finished, and another is part-way. A trial whose last
        # epoch came after the last save is RUNNING in that state, so --resume rightly trains it on from its checkpoint.
        finished_before: set[str] = set()

        def one_done_one_running() -> bool:
            counts = result_lines(tmp_path, "resumed") if (tmp_path / "results").exists() else {}
            saved = saved_statuses(tmp_path, "resumed") if counts else {}
            finished_before.update(trial for trial, status in saved.items() if status == "TERMINATED")
            return bool(finished_before) and any(0 < n < 6 for n in counts.values())

        wait_for(one_done_one_running, timeout_s=300, what="one trial done, one part-way", process=driver)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        # The whole group, also once the driver is gone: its local Ray's dashboard and runtime-env agents outlive it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    # A save finished between the last look and the kill can only have added finished trials.
    finished_before.update(trial for trial, status in saved_statuses(tmp_path, "resumed").items()
                           if status == "TERMINATED")
    # What the killed driver leaves when it opened a trial's run after Tune last saved its state (this race does happen
    # now and then by itself): the resumed experiment never knew that trial, and the searcher proposes another.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = client.get_experiment_by_name("resumed").experiment_id
    (parent,) = client.search_runs([experiment_id], "tags.`raysweep.role` = 'sweep'")
    orphan = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent.info.run_id, "raysweep.role": "trial",
                                                    "raysweep.trial_id": "0a0b0c0d"}).info.run_id
    # And what it leaves when killed while Tune copies its snapshot into the storage (a fresh-clone run hung on it):
    # an empty searcher state. The ctrl-c test below resumes from an intact one.
    (searcher_state,) = (tmp_path / "results" / "resumed").glob("*/searcher-state-*.pkl")
    searcher_state.write_bytes(b"")

    done = run_sweep(sweep_file, tmp_path, "--resume", address=ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"warning: the searcher's saved state {searcher_state.name} could not be read" in done.stderr
    after = result_lines(tmp_path, "resumed")
    assert finished_before and all(after[trial] == 6 for trial in finished_before)  # not run again
    assert_each_trial_once_and_complete(tmp_path, "resumed", trials=4, epochs=6)
    abandoned = client.get_run(orphan)
    assert (abandoned.info.lifecycle_stage, abandoned.data.tags["raysweep.status"]) == ("deleted", "abandoned")


def test_ctrl_c_marks_unfinished_trials_interrupted_and_resume_completes_them(tmp_path, ray_address):
    sweep_file = write_sweep(tmp_path, SLOW_SWEEP.format(name="ctrlc"))
    driver = subprocess.Popen(command(sweep_file, tmp_path), cwd=tmp_path, env=sweep_env(tmp_path, snapshot_every_s=1),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def one_done_one_running() -> bool:
        counts = result_lines(tmp_path, "ctrlc") if (tmp_path / "results").exists() else {}
        return 6 in counts.values() and any(0 < n < 6 for n in counts.values())

    wait_for(one_done_one_running, timeout_s=300, what="one trial done, one part-way", process=driver)
    driver.send_signal(signal.SIGINT)  # the driver alone, as Ctrl-C in its terminal would reach it
    out, err = driver.communicate(timeout=300)
    rows = trials_csv(tmp_path, "ctrlc")
    interrupted = {r["trial_id"] for r in rows if r["status"] == "interrupted"}
    assert driver.returncode == 130, err[-3000:]
    assert "continue them with --resume" in out
    # The searcher proposes the fourth trial only when a slot frees up: Ctrl-C may come before it exists.
    assert len(rows) in (3, 4) and interrupted and {r["status"] for r in rows} == {"completed", "interrupted"}
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    children = client.search_runs([client.get_experiment_by_name("ctrlc").experiment_id],
                                  "tags.`raysweep.role` = 'trial'")
    assert children and {c.data.tags["raysweep.trial_id"] for c in children} <= {r["trial_id"] for r in rows}
    for child in children:  # every trial that started has a run, marked as its row is
        assert (child.data.tags["raysweep.status"] == "interrupted") == (child.data.tags["raysweep.trial_id"]
                                                                          in interrupted)

    done = run_sweep(sweep_file, tmp_path, "--resume", address=ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warning: the searcher's saved state" not in done.stderr  # a Ctrl-C'd driver saves it whole
    assert_each_trial_once_and_complete(tmp_path, "ctrlc", trials=4, epochs=6)


def test_a_killed_trial_worker_is_retried_from_its_checkpoint(tmp_path, ray_address):
    sweep_file = write_sweep(tmp_path, SLOW_SWEEP.format(name="killed"))
    driver = subprocess.Popen(command(sweep_file, tmp_path, address=ray_address), cwd=tmp_path,
                              env=sweep_env(tmp_path, snapshot_every_s=1), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    killed: dict[str, int] = {}

    def kill_a_worker_mid_trial() -> bool:
        for path in (tmp_path / "results" / "killed").glob("*/*/result.json"):
            lines = path.read_text().splitlines()
            if lines and 2 <= epochs_checkpointed(path.parent) <= 4:  # >= 2 epochs to go when seen, >= 1 when killed
                killed[path.parent.name] = len(lines)
                os.kill(json.loads(lines[-1])["pid"], signal.SIGKILL)  # Tune records each trial's worker pid
                return True
        return False

    try:
        wait_for(lambda: (tmp_path / "results").exists() and kill_a_worker_mid_trial(), timeout_s=300,
                 what="a trial part-way", process=driver)
        _, stderr = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr[-3000:]
    (trial,) = killed
    results = [json.loads(line) for line in
               next((tmp_path / "results" / "killed").glob(f"*/{trial}/result.json")).read_text().splitlines()]
    assert_resumed_from_a_checkpoint(results, epochs=6, by="pid")  # in a new worker, not from epoch 1
    assert_each_trial_once_and_complete(tmp_path, "killed", trials=4, epochs=6)  # every epoch once in the record


def test_after_a_killed_worker_trials_csv_the_sweep_run_and_each_trials_history_agree(tmp_path):
    sweep_file = write_sweep(tmp_path, SLOW_SWEEP.format(name="agree"))
    driver = subprocess.Popen(command(sweep_file, tmp_path, "--num-samples", "2"), cwd=tmp_path,
                              env=sweep_env(tmp_path, snapshot_every_s=1), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)

    def kill_a_worker_mid_trial() -> bool:  # as in the test above: SIGKILL the worker after its second epoch
        for path in (tmp_path / "results" / "agree").glob("*/*/result.json"):
            lines = path.read_text().splitlines()
            if lines and 2 <= epochs_checkpointed(path.parent) <= 4:
                os.kill(json.loads(lines[-1])["pid"], signal.SIGKILL)
                return True
        return False

    wait_for(lambda: (tmp_path / "results").exists() and kill_a_worker_mid_trial(), timeout_s=300,
             what="a trial part-way", process=driver)
    _, stderr = driver.communicate(timeout=600)
    assert driver.returncode == 0, stderr[-3000:]
    rows = trials_csv(tmp_path, "agree")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("agree").experiment_id])
    (parent,) = [r for r in runs if r.data.tags["raysweep.role"] == "sweep"]
    trials = {r.data.tags["raysweep.trial_id"]: r for r in runs if r.data.tags["raysweep.role"] == "trial"}
    assert sorted(trials) == sorted(r["trial_id"] for r in rows) and len(rows) == 2
    for row in rows:  # each trial's MLflow history, worked out here, against its row
        points = sorted((m.step, m.value) for m in client.get_metric_history(trials[row["trial_id"]].info.run_id,
                                                                           "val_acc"))
        steps = [s for s, _ in points]
        values = [v for _, v in points]
        assert steps == list(range(1, 7))  # every epoch once, the one the kill cut short included
        assert (int(row["epochs"]), row["status"]) == (6, "completed")
        assert trials[row["trial_id"]].data.tags["raysweep.status"] == row["status"]
        assert float(row["best_val_acc"]) == max(values)
        assert int(row["best_epoch"]) == steps[values.index(max(values))]
    best = max(rows, key=lambda r: float(r["best_val_acc"]))
    assert parent.data.metrics["best_val_acc"] == float(best["best_val_acc"])
    assert parent.data.metrics["best_epoch"] == int(best["best_epoch"])
    assert parent.data.tags["raysweep.best_run_id"] == trials[best["trial_id"]].info.run_id


CONNECT = """
import os, time
from pathlib import Path
from raysweep import progress, run
from raysweep.sweep import Sweep
from tests.servers import processes

progress.quiet_ray("quiet")
run.connect(Sweep(name="x", cpu=1, gpu=0), address=None)
time.sleep(3)  # Ray starts the idle workers it prestarts when the driver connects
mine = {os.getpid()}
for process in sorted(processes(), key=lambda p: p.pid):
    if process.parent in mine:
        mine.add(process.pid)
titles = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\\0")[0].decode() for pid in mine if pid != os.getpid()]
print(sum(title.startswith("ray::IDLE") for title in titles), len(titles))
"""


def test_a_local_ray_starts_no_idle_workers_that_no_trial_would_take():
    done = subprocess.run([sys.executable, "-c", CONNECT], capture_output=True, text=True,
                          cwd=REPO, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    idle, started = map(int, done.stdout.split()[-2:])
    assert started >= 3 and idle == 0  # Ray's own processes ran (gcs, raylet, agents), but no idle worker
