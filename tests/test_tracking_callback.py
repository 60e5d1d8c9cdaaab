"""The trial callback, driven through Tune's hooks with real Trial objects against a real local MLflow store: a child
run per trial with its params and per-epoch metrics, the status rule at the end, and what it hands over after fit."""

from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from raysweep.config import TrialConfig
from raysweep.mlflow_runs import GIVEN, PARENT, ROLE, STATUS, STOPPED_EPOCH, TRIAL_ID, SweepRun
from raysweep.tracking_callback import ExperimentEnd, MlflowTrialCallback

MAX_EPOCHS = 3


def trial(trial_id: str, config: dict) -> Trial:
    return Trial("trainable", config=config, trial_id=trial_id, stub=True)


def result(epoch: int, val_acc: float, **extra) -> dict:
    return {"epoch": epoch, "training_iteration": epoch, "val_acc": val_acc, "val_loss": 1 - val_acc,
            "train_loss": 0.5, "train_acc": 0.8, "lr": 0.1, "epoch_time_s": 0.01, **extra}


def child(sweep_run: SweepRun, trial_id: str):
    client = MlflowClient(sweep_run.tracking_uri)
    runs = client.search_runs([sweep_run.experiment_id], f"tags.`{TRIAL_ID}` = '{trial_id}'")
    assert len(runs) == 1
    return client, runs[0]


def test_a_trial_becomes_a_child_run_with_flat_params_and_one_metric_point_per_epoch(sweep_run):
    callback = MlflowTrialCallback(sweep_run=sweep_run, max_epochs=MAX_EPOCHS)
    sgd = trial("t1", {"optimizer": {"optimizer": "sgd", "optimizer.momentum": 0.9}, "lr": 0.1})
    callback.on_trial_start(0, [sgd], sgd)
    # A trial restarted from its epoch-1 checkpoint repeats epoch 2: the repeat is not logged twice.
    for epoch, acc in [(1, 0.5), (2, 0.7), (2, 0.9), (3, 0.6)]:
        callback.on_trial_result(0, [sgd], sgd, result(epoch, acc))
    callback.on_trial_complete(0, [sgd], sgd)
    client, run = child(sweep_run, "t1")
    assert run.data.tags[ROLE] == "trial" and run.data.tags[PARENT] == sweep_run.run_id
    params = run.data.params
    assert {k: params[k] for k in ("optimizer", "optimizer.momentum", "lr")} == {
        "optimizer": "sgd", "optimizer.momentum": "0.9", "lr": "0.1"}
    assert set(params) == set(TrialConfig().to_dict()) and params["init"] == "he"  # every setting, defaults too
    assert run.data.tags[GIVEN] == "lr,optimizer,optimizer.momentum"  # what the sweep gave it; the rest are defaults
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.7), (3, 0.6)]
    assert run.info.status == "FINISHED" and run.data.tags[STATUS] == "completed"
    assert run.info.run_name == "sgd momentum=0.9 lr=0.1"  # choices by name first, then numbers


def test_the_status_tag_follows_the_status_rule(sweep_run):
    callback = MlflowTrialCallback(sweep_run=sweep_run, max_epochs=MAX_EPOCHS)
    short, broken = trial("t1", {"lr": 0.1}), trial("t2", {"lr": 10.0})
    for t in (short, broken):
        callback.on_trial_start(0, [short, broken], t)
    callback.on_trial_result(0, [short], short, result(1, 0.4))  # stopped after 1 of 3 epochs: early_stopped
    callback.on_trial_complete(0, [short], short)
    callback.on_trial_error(0, [broken], broken)
    _, stopped = child(sweep_run, "t1")
    _, failed = child(sweep_run, "t2")
    assert (stopped.data.tags[STATUS], stopped.data.tags[STOPPED_EPOCH]) == ("early_stopped", "1")
    assert (failed.data.tags[STATUS], failed.info.status) == ("failed", "FAILED")


def test_trials_unfinished_at_the_end_are_interrupted_and_handed_over_through_the_end_file(sweep_run, tmp_path):
    end_file = tmp_path / "results" / "experiment_end.json"
    callback = MlflowTrialCallback(sweep_run=sweep_run, max_epochs=MAX_EPOCHS, end_file=end_file)
    done, cut = trial("t1", {"lr": 0.1}), trial("t2", {"lr": 0.2})
    for t in (done, cut):
        callback.on_trial_start(0, [done, cut], t)
    callback.on_trial_result(0, [cut], cut, result(1, 0.4))
    done.set_status(Trial.TERMINATED)
    cut.set_status(Trial.RUNNING)
    callback.on_trial_complete(0, [done], done)
    callback.on_step_end(0, [done, cut])
    callback.on_experiment_end([done, cut])
    end = ExperimentEnd.read(end_file)
    assert end == ExperimentEnd(interrupted=frozenset({"t2"}), unlogged=())
    _, run = child(sweep_run, "t2")
    assert (run.data.tags[STATUS], run.info.status) == ("interrupted", "KILLED")


def test_writes_that_cannot_reach_mlflow_are_listed_not_raised(tmp_path):
    gone = SweepRun(tracking_uri="http://127.0.0.1:9", experiment_id="1", run_id="parent")
    end_file = tmp_path / "experiment_end.json"
    callback = MlflowTrialCallback(sweep_run=gone, max_epochs=MAX_EPOCHS, end_file=end_file, retry_every_s=0.0)
    t = trial("t1", {"lr": 0.1})
    callback.on_trial_start(0, [t], t)  # queued, not raised into Tune
    callback.on_experiment_end([t])
    unlogged = ExperimentEnd.read(end_file).unlogged
    assert unlogged[0].startswith("MLflow at http://127.0.0.1:9 failed")
    assert "trial t1: child run 'lr=0.1' not logged" in unlogged


def test_an_experiment_that_never_reached_its_end_hands_over_nothing(tmp_path):
    assert ExperimentEnd.read(tmp_path / "absent.json") == ExperimentEnd()


def test_with_repeats_each_seed_gets_a_nested_run_with_its_own_curve_and_the_configuration_its_mean_and_std(
        sweep_run):
    callback = MlflowTrialCallback(sweep_run=sweep_run, max_epochs=2)
    t = trial("t1", {"lr": 0.1, "seed": 5})
    callback.on_trial_start(0, [t], t)
    for epoch, accs in [(1, (0.5, 0.7)), (2, (0.6, 0.9))]:
        seeds = {str(5 + i): result(epoch, acc) for i, acc in enumerate(accs)}
        mean = result(epoch, sum(accs) / 2, val_acc_std=abs(accs[0] - accs[1]) / 2 ** 0.5, seed_metrics=seeds)
        callback.on_trial_result(0, [t], t, mean)
    callback.on_trial_complete(0, [t], t)
    client, configuration = child(sweep_run, "t1")
    assert [m.value for m in client.get_metric_history(configuration.info.run_id, "val_acc")] == [0.6, 0.75]
    assert [round(m.value, 6) for m in client.get_metric_history(configuration.info.run_id, "val_acc_std")] == [
        round(0.2 / 2 ** 0.5, 6), round(0.3 / 2 ** 0.5, 6)]
    nested = client.search_runs([sweep_run.experiment_id], f"tags.`{PARENT}` = '{configuration.info.run_id}'")
    by_seed = {run.data.tags["raysweep.seed"]: run for run in nested}
    assert sorted(by_seed) == ["5", "6"] and all(run.data.tags[ROLE] == "seed" for run in nested)
    assert [m.value for m in client.get_metric_history(by_seed["6"].info.run_id, "val_acc")] == [0.7, 0.9]
    assert by_seed["6"].data.params == {"seed": "6"}
    assert all(run.info.status == "FINISHED" and run.data.tags[STATUS] == "completed" for run in nested)
