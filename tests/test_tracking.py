"""The MLflow record of a sweep, written by a real Tune run on local Ray to a real `mlflow server`."""

from __future__ import annotations

import pickle
import socket
import sys
from pathlib import Path

import mlflow.pytorch
import numpy as np
import pytest
import ray
import ray.cloudpickle
import torch
from mlflow.tracking import MlflowClient
from ray import tune

from raysweep.mlflow_runs import (
    ABANDONED,
    METRICS,
    PARENT,
    ROLE,
    STATUS,
    STOPPED_EPOCH,
    TRIAL_ID,
    SweepRun,
    TrackingUnavailableError,
    check_reachable,
    resolve_tracking_uri,
)
from raysweep.tracking import (
    abandon_unknown_trial_runs,
    find_trial_run,
    finish_sweep_run,
    log_best_trial,
    start_sweep_run,
)
from raysweep.tracking_callback import MlflowTrialCallback

try:  # tests/ as a package, or tests/ on sys.path (pytest's rootdir-relative import)
    from tests.servers import MlflowServer, environment_kept, free_port
except ImportError:
    from servers import MlflowServer, environment_kept, free_port

# Ray workers cannot import this test module: ship the trainable and its helpers by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

MAX_EPOCHS = 3
# How each trial ends, by its optimizer: (epochs it reports, flags on its last report).
PLAN = {
    "sgd": (3, {}),
    "adam": (2, {"diverged": True}),
    "rmsprop": (3, {"early_stopped": True, "stopped_epoch": 3}),  # fires on the last epoch: only the flag tells
    "adagrad": (3, {}),  # the stopper ends it after epoch 1, as ASHA would
}
# optimizer -> (raysweep.status, epochs logged)
EXPECTED = {
    "sgd": ("completed", [1, 2, 3]),
    "adam": ("diverged", [1, 2]),
    "rmsprop": ("early_stopped", [1, 2, 3]),
    "adagrad": ("early_stopped", [1]),
}


def settings(config: dict) -> dict:
    """Tune's config -> flat settings: a conditional choice's dict merges in, as raysweep.config.flatten does
    (not imported here: it would import torch in every Ray worker)."""
    flat = {}
    for key, value in config.items():
        flat.update(value if isinstance(value, dict) else {key: value})
    return flat


def trainable(config: dict) -> None:
    config = settings(config)  # the optimizer's settings come nested, as a conditional choice does
    epochs, last_flags = PLAN[config["optimizer"]]
    fail_flag = Path(config["fail_flag"]) if config.get("fail_flag") else None
    for epoch in range(1, epochs + 1):
        if fail_flag and config["optimizer"] == "sgd" and epoch == 3 and not fail_flag.exists():
            fail_flag.touch()  # fail once, after epoch 2, as a lost node would
            raise RuntimeError("simulated trial failure")
        last = epoch == epochs
        flags = last_flags if last else {}
        loss = float("nan") if flags.get("diverged") else 1.0 / epoch
        tune.report({"epoch": epoch, "train_loss": loss, "train_acc": 0.5 + 0.1 * epoch, "val_loss": loss,
                     "val_acc": 0.4 + 0.1 * epoch, "lr": config["lr"], "epoch_time_s": 0.01,
                     "diverged": bool(flags.get("diverged")), "early_stopped": bool(flags.get("early_stopped")),
                     **({"stopped_epoch": flags["stopped_epoch"]} if "stopped_epoch" in flags else {})})


def stop_adagrad_after_epoch_1(trial_id: str, result: dict) -> bool:
    return settings(result["config"])["optimizer"] == "adagrad" and result["epoch"] >= 1


class StopServerAtEpoch(tune.Callback):
    """Takes the MLflow server down when the first result of `epoch` arrives (before our callback sees it)."""

    def __init__(self, server: MlflowServer, epoch: int) -> None:
        self.server, self.epoch = server, epoch

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if result["epoch"] >= self.epoch:
            self.server.stop()


def param_space(optimizers: list[str], **extra) -> dict:
    choices = [{"optimizer": name, "optimizer.momentum": tune.choice([0.9])} for name in optimizers]
    return {"optimizer": tune.grid_search(choices), "lr": tune.choice([0.01]), "batch_size": 32,
            "hidden": (300, 100), **extra}


def run_sweep(sweep_run: SweepRun, storage: Path, *, optimizers=tuple(PLAN), before=(), **extra):
    callback = MlflowTrialCallback(sweep_run=sweep_run, max_epochs=MAX_EPOCHS)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space(list(optimizers), **extra),
        tune_config=tune.TuneConfig(reuse_actors=True),  # a new actor per trial costs seconds
        run_config=tune.RunConfig(name="sweep", storage_path=str(storage), stop=stop_adagrad_after_epoch_1,
                                  callbacks=[*before, callback], verbose=0),
    )
    return callback, tuner.fit()


def open_sweep(uri: str, name: str, *, resume: bool = False) -> SweepRun:
    return start_sweep_run(
        tracking_uri=uri, experiment_name=name, sweep_key=f"{name}-key",
        params={"search.optimizer": "grid", "scheduler": "asha", "scheduler.grace_period": 1},
        tags={"mlflow.source.git.commit": "0123abc"},
        artifacts={"sweep.py": "SWEEP = Sweep(name='demo')\n", "resolved_sweep.json": '{"name": "demo"}'},
        resume=resume,
    )


def children(client: MlflowClient, sweep_run: SweepRun) -> list:
    return client.search_runs([sweep_run.experiment_id], f"tags.`{PARENT}` = '{sweep_run.run_id}'")


def record(client: MlflowClient, sweep_run: SweepRun) -> dict[str, tuple[str, list[int]]]:
    """optimizer -> (raysweep.status, steps of val_loss); every metric must have the same steps."""
    out = {}
    for run in children(client, sweep_run):
        steps = {k: [m.step for m in client.get_metric_history(run.info.run_id, k)] for k in METRICS}
        assert len({tuple(sorted(s)) for s in steps.values()}) == 1, steps
        assert run.data.params["optimizer"] not in out, "two child runs for one trial"
        out[run.data.params["optimizer"]] = (run.data.tags.get(STATUS), sorted(steps["val_loss"]))
    return out


@pytest.fixture(scope="module")
def booting_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    server.start(wait=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def local_ray(booting_server, ray_address):
    # The session's 2-CPU Ray (it starts while the server boots, if this module is the first to need it).
    with environment_kept():
        ray.init(address=ray_address, log_to_driver=False)
        yield
        ray.shutdown()


@pytest.fixture(scope="module")
def server(booting_server, local_ray):
    booting_server.wait_until_answering()
    return booting_server


@pytest.fixture(scope="module")
def server_sweep(local_ray, server, tmp_path_factory):
    """One sweep of the four PLAN trials logged to the server, then finished with a summary."""
    sweep_run = open_sweep(server.uri, "server_sweep")
    callback, results = run_sweep(sweep_run, tmp_path_factory.mktemp("tune"))
    summary = tmp_path_factory.mktemp("report") / "summary.csv"
    summary.write_text("trial,val_acc\nsgd,0.7\n")
    unlogged = finish_sweep_run(sweep_run, metrics={"best_val_acc": 0.7, "best_test_acc": 0.69},
                                tags={"raysweep.best_run_id": "r1"}, artifact_paths=[summary])
    return sweep_run, callback, results, unlogged


def test_each_trial_gets_one_child_run_of_the_parent(server_sweep, server):
    sweep_run, callback, results, _ = server_sweep
    runs = children(MlflowClient(server.uri), sweep_run)
    assert sorted(r.data.tags[TRIAL_ID] for r in runs) == sorted(r.metrics["trial_id"] for r in results)
    assert {r.data.tags[ROLE] for r in runs} == {"trial"}
    assert callback.missing == []


def test_child_run_name_says_what_the_trial_varies(server_sweep, server):
    sweep_run, *_ = server_sweep
    names = {r.info.run_name for r in children(MlflowClient(server.uri), sweep_run)}
    assert names == {f"{name} lr=0.01 momentum=0.9" for name in PLAN}


def test_child_params_keep_flat_dotted_names(server_sweep, server):
    sweep_run, *_ = server_sweep
    run = children(MlflowClient(server.uri), sweep_run)[0]
    assert {k: run.data.params[k] for k in ("optimizer.momentum", "batch_size", "hidden")} == {
        "optimizer.momentum": "0.9", "batch_size": "32", "hidden": "(300, 100)"}


def test_metric_history_has_one_step_per_epoch_and_status_says_how_the_trial_ended(server_sweep, server):
    sweep_run, *_ = server_sweep
    assert record(MlflowClient(server.uri), sweep_run) == EXPECTED


def test_stopped_epoch_tag_comes_from_the_trial(server_sweep, server):
    sweep_run, *_ = server_sweep
    tags = {r.data.params["optimizer"]: r.data.tags[STOPPED_EPOCH]
            for r in children(MlflowClient(server.uri), sweep_run)}
    assert tags == {"sgd": "3", "adam": "2", "rmsprop": "3", "adagrad": "1"}


def test_parent_run_holds_sweep_files_settings_versions_and_summary(server_sweep, server, tmp_path):
    sweep_run, _, _, unlogged = server_sweep
    client = MlflowClient(server.uri)
    parent = client.get_run(sweep_run.run_id)
    artifacts = {a.path for a in client.list_artifacts(sweep_run.run_id)}
    logged = Path(client.download_artifacts(sweep_run.run_id, "", str(tmp_path)))
    assert unlogged == []
    assert artifacts == {"sweep.py", "resolved_sweep.json", "summary.csv"}
    assert {name: (logged / name).read_text() for name in sorted(artifacts)} == {  # as given to it, byte for byte
        "resolved_sweep.json": '{"name": "demo"}', "summary.csv": "trial,val_acc\nsgd,0.7\n",
        "sweep.py": "SWEEP = Sweep(name='demo')\n"}
    assert parent.data.params["scheduler.grace_period"] == "1"
    assert parent.data.metrics == {"best_val_acc": 0.7, "best_test_acc": 0.69}
    assert {k: parent.data.tags[k] for k in (ROLE, "mlflow.source.git.commit", "raysweep.version.ray",
                                             "raysweep.cluster.cpus", "raysweep.best_run_id")} == {
        ROLE: "sweep", "mlflow.source.git.commit": "0123abc", "raysweep.version.ray": ray.__version__,
        "raysweep.cluster.cpus": "2", "raysweep.best_run_id": "r1"}
    assert parent.info.status == "FINISHED"


def test_find_trial_run_maps_a_trial_id_to_its_child_run(server_sweep, server):
    sweep_run, _, results, _ = server_sweep
    trial_id = results[0].metrics["trial_id"]
    run_id = find_trial_run(sweep_run, trial_id)
    assert MlflowClient(server.uri).get_run(run_id).data.tags[TRIAL_ID] == trial_id


def test_callback_pickles_after_it_has_logged(server_sweep):
    _, callback, _, _ = server_sweep
    copy = pickle.loads(pickle.dumps(callback))
    assert copy._run_ids == callback._run_ids and copy._run_ids


def test_local_default_store_gets_the_same_record(local_ray, server_sweep, server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = resolve_tracking_uri(None)
    sweep_run = open_sweep(uri, "local_sweep")
    callback, _ = run_sweep(sweep_run, tmp_path / "tune")
    client = MlflowClient(uri)
    assert uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert record(client, sweep_run) == record(MlflowClient(server.uri), server_sweep[0])
    assert {a.path for a in client.list_artifacts(sweep_run.run_id)} == {"sweep.py", "resolved_sweep.json"}


def test_resumed_sweep_continues_the_same_runs_without_logging_a_step_twice(local_ray, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = open_sweep(uri, "resumed")
    _, results = run_sweep(first, tmp_path / "tune", optimizers=["sgd", "adam"],
                           fail_flag=str(tmp_path / "failed_once"))
    client = MlflowClient(uri)
    assert len(results.errors) == 1 and record(client, first)["sgd"] == ("failed", [1, 2])

    again = open_sweep(uri, "resumed", resume=True)
    # resume_errored keeps the trial id (restart_errored would make a new trial, hence a new run).
    tuner = tune.Tuner.restore(str(tmp_path / "tune" / "sweep"), trainable, resume_errored=True)
    assert tuner.fit().errors == []
    restored_callback, = [c for c in tuner._local_tuner.get_run_config().callbacks  # Tune's unpickled copy
                          if isinstance(c, MlflowTrialCallback)]
    assert again == first
    assert sorted(r.data.tags[TRIAL_ID] for r in children(client, first)) == sorted(
        r.metrics["trial_id"] for r in results)
    assert record(client, first) == {"sgd": ("completed", [1, 2, 3]), "adam": ("diverged", [1, 2])}
    assert restored_callback.missing == []


def test_mlflow_outage_mid_sweep_is_reported_then_filled_in(server, tmp_path):
    sweep_run = open_sweep(server.uri, "outage")
    callback, results = run_sweep(sweep_run, tmp_path / "tune", before=[StopServerAtEpoch(server, epoch=2)])
    missing_while_down = list(callback.missing)

    server.start()  # the same port and database, as a server coming back would
    missing_after_retry = callback.flush()
    client = MlflowClient(server.uri)
    running = [r for r in children(client, sweep_run) if r.info.status == "RUNNING"]
    assert results.errors == []
    assert any("metrics of epoch 2" in line for line in missing_while_down)
    assert missing_after_retry == []
    assert record(client, sweep_run) == EXPECTED
    assert running == []


def test_best_trial_model_loads_back_and_predicts(server, monkeypatch):
    sweep_run = open_sweep(server.uri, "best_model")
    client = MlflowClient(server.uri)
    child = client.create_run(sweep_run.experiment_id, tags={PARENT: sweep_run.run_id, ROLE: "trial"})
    client.set_terminated(child.info.run_id)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))  # (B, 8, 8) -> (B, 10)
    images = np.random.default_rng(0).random((5, 8, 8), dtype=np.float32)

    preprocessing = {"mean": [0.25], "std": [0.5], "classes": [str(i) for i in range(10)]}

    log_best_trial(sweep_run, child_run_id=child.info.run_id, test_metrics={"test_loss": 0.3, "test_acc": 0.9},
                   model=model, input_example=images[:2], preprocessing=preprocessing)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)  # runs:/ URIs resolve through it
    loaded = mlflow.pytorch.load_model(f"runs:/{child.info.run_id}/model")
    run = client.get_run(child.info.run_id)
    assert loaded(torch.from_numpy(images)).shape == (5, 10)
    assert mlflow.models.get_model_info(f"runs:/{child.info.run_id}/model").metadata == preprocessing
    assert run.data.metrics == {"test_loss": 0.3, "test_acc": 0.9}
    assert run.info.status == "FINISHED"


def test_finish_closes_child_runs_left_running(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep_run = open_sweep(uri, "left_running")
    client = MlflowClient(uri)
    child = client.create_run(sweep_run.experiment_id, tags={PARENT: sweep_run.run_id, ROLE: "trial"})

    unlogged = finish_sweep_run(sweep_run, metrics={}, tags={}, artifact_paths=[])
    closed = client.get_run(child.info.run_id)
    assert unlogged == []
    assert (closed.info.status, closed.data.tags[STATUS]) == ("KILLED", "failed")
    assert client.get_run(sweep_run.run_id).info.status == "FINISHED"


def test_runs_of_trials_the_experiment_does_not_hold_are_tagged_abandoned_and_deleted(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep_run = open_sweep(uri, "orphans")
    client = MlflowClient(uri)
    runs = {trial: client.create_run(sweep_run.experiment_id, tags={PARENT: sweep_run.run_id, ROLE: "trial",
                                                                     TRIAL_ID: trial}).info.run_id
            for trial in ("kept0001", "orphan01")}
    elsewhere = client.create_run(sweep_run.experiment_id, tags={ROLE: "trial", TRIAL_ID: "orphan01"}).info.run_id

    failures = abandon_unknown_trial_runs(sweep_run, is_trial=lambda trial: trial == "kept0001")
    orphan, kept = client.get_run(runs["orphan01"]), client.get_run(runs["kept0001"])
    assert failures == []
    assert (orphan.info.lifecycle_stage, orphan.info.status, orphan.data.tags[STATUS]) == ("deleted", "KILLED",
                                                                                           ABANDONED)
    assert (kept.info.lifecycle_stage, kept.info.status) == ("active", "RUNNING")
    assert client.get_run(elsewhere).info.lifecycle_stage == "active"  # another sweep's run is not ours to judge


def test_abandoning_orphan_runs_reports_an_unreachable_server_in_one_line():
    sweep_run = SweepRun(tracking_uri=f"http://127.0.0.1:{free_port()}", experiment_id="1", run_id="0" * 32)
    failures = abandon_unknown_trial_runs(sweep_run, is_trial=lambda trial: False)
    assert len(failures) == 1 and failures[0].startswith("listing child runs: ")


def test_check_reachable_rejects_a_closed_port():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingUnavailableError, match=uri):
        check_reachable(uri, timeout_s=2.0)


def test_check_reachable_gives_up_on_a_server_that_never_answers():
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(TrackingUnavailableError, match="did not answer within 1 s"):
            check_reachable(uri, timeout_s=1.0)


def test_check_reachable_accepts_a_running_server_and_a_writable_sqlite_folder(server, tmp_path):
    check_reachable(server.uri)
    check_reachable(f"sqlite:///{tmp_path}/new/mlflow.db")
    assert (tmp_path / "new").is_dir()


def test_check_reachable_rejects_a_store_folder_that_cannot_be_created(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(TrackingUnavailableError, match="a_file"):
        check_reachable(f"sqlite:///{tmp_path}/a_file/mlflow.db")


def test_tracking_uri_comes_from_the_option_then_the_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5999"


def test_stop_reason_tag_tells_patience_from_the_scheduler(server_sweep, server):
    from raysweep.mlflow_runs import STOP_REASON

    sweep_run, *_ = server_sweep
    tags = {r.data.params["optimizer"]: r.data.tags[STOP_REASON]
            for r in children(MlflowClient(server.uri), sweep_run)}
    # adagrad is stopped after epoch 1 by Tune (as ASHA would), with no flag of its own
    assert tags == {"sgd": "max_epochs", "adam": "diverged", "rmsprop": "patience", "adagrad": "asha"}


def test_child_params_hold_every_trial_setting_defaults_included(server_sweep, server):
    from raysweep.config import TrialConfig

    sweep_run, *_ = server_sweep
    for run in children(MlflowClient(server.uri), sweep_run):
        assert set(run.data.params) == set(TrialConfig().to_dict())
        assert (run.data.params["init"], run.data.params["activation"], run.data.params["patience"]) == (
            "he", "relu", "0")
