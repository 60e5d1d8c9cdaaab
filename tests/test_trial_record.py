"""Reading a trial back from a real MLflow store (sqlite), with runs made by hand as the sweep makes them."""

from __future__ import annotations

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from raysweep.config import TrialConfig
from raysweep.trial_record import RecordError, find_records, parse_param, recorded_history, split_of

# What today's trial runs hold: the searcher's choices and the sweep's fixed settings, max_epochs and seed.
TODAY = {"model": "mlp", "hidden": "[128]", "batch_size": "32", "max_epochs": "3", "seed": "0", "dropout": "0.25",
         "lr": "0.005553999604010706", "optimizer": "sgd", "optimizer.momentum": "0.5", "regularizer": "l2",
         "regularizer.alpha": "0.00011048541243758397"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    # One store for the module (creating a sqlite store runs MLflow's migrations: seconds); an experiment per test.
    return MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")


def make_run(client, experiment_id, *, role, parent=None, params=None, history=()):
    tags = {"raysweep.role": role, **({"mlflow.parentRunId": parent} if parent else {})}
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    client.log_batch(run_id, params=[Param(k, v) for k, v in (params or {}).items()],
                     metrics=[Metric("val_acc", value, 1000 + step, step) for step, value in history])
    return run_id


@pytest.fixture
def sweep(client, request):
    experiment_id = client.create_experiment(request.node.name)
    sweep_id = make_run(client, experiment_id, role="sweep",
                        params={"dataset": "digits", "val_size": "None", "subset": "256", "seed": "0", "cpu": "1",
                                "gpu": "0.0"})
    return experiment_id, sweep_id


@pytest.mark.parametrize(("text", "value"), [
    ("0.005553999604010706", 0.005553999604010706), ("[128]", [128]), ("(64, 32)", (64, 32)), ("None", None),
    ("32", 32), ("True", True), ("adam", "adam"), ("full", "full"), ("he", "he"),
])
def test_a_param_is_parsed_back_to_the_value_whose_str_was_logged(text, value):
    assert parse_param(text) == value and type(parse_param(text)) is type(value)


def test_complete_params_give_back_the_very_config_that_was_logged():
    # Every field off its default, including the awkward kinds: None, bool, tuples, "full", tiny floats.
    config = TrialConfig(hidden=(64, 32), batch_norm=(1,), dropout=0.1, dropout_after=(2,), optimizer="sgd",
                         lr=1e-4, batch_size="full", optimizer_momentum=0.3, optimizer_nesterov=True,
                         optimizer_eps=1e-9, regularizer="elastic_net", regularizer_l1_ratio=0.25, patience=3,
                         max_epochs=7, seed=11)
    logged = {key: str(value) for key, value in config.to_dict().items()}  # as the callback logs them
    assert TrialConfig.from_dict({k: parse_param(v) for k, v in logged.items()}) == config


def test_todays_partial_params_take_trialconfigs_defaults_for_what_they_lack(client, sweep):
    experiment_id, sweep_id = sweep
    trial = make_run(client, experiment_id, role="trial", parent=sweep_id, params=TODAY, history=[(1, 0.5)])
    _, [record] = find_records(client, trial)
    assert record.config == TrialConfig(hidden=(128,), dropout=0.25, lr=0.005553999604010706, optimizer="sgd",
                                        optimizer_momentum=0.5, regularizer="l2",
                                        regularizer_alpha=0.00011048541243758397, max_epochs=3, seed=0)


def test_the_latest_value_logged_for_a_step_is_the_recorded_one(client, sweep):
    experiment_id, _ = sweep
    run_id = make_run(client, experiment_id, role="trial", history=[(1, 0.5), (2, 0.6)])
    client.log_batch(run_id, metrics=[Metric("val_acc", 0.9, 5000, 2), Metric("val_acc", 0.7, 3000, 2)])
    assert recorded_history(client, run_id) == {1: 0.5, 2: 0.9}


def test_the_sweep_run_gives_the_split_and_notes_what_it_does_not_record(client, sweep):
    _, sweep_id = sweep
    split, notes = split_of(client.get_run(sweep_id))
    assert split == {"dataset": "digits", "val_size": None, "val_pick": "first", "subset": 256, "seed": 0, "cpu": 1,
                     "gpu": 0.0}
    assert len(notes) == 1 and "`val_pick`" in notes[0]


def test_a_configuration_with_seed_runs_gives_one_record_per_seed_with_its_own_seed(client, sweep):
    experiment_id, sweep_id = sweep
    configuration = make_run(client, experiment_id, role="trial", parent=sweep_id, params=TODAY, history=[(1, 0.5)])
    for seed, value in ((1, 0.6), (0, 0.4)):
        make_run(client, experiment_id, role="seed", parent=configuration, params={"seed": str(seed)},
                 history=[(1, value)])
    sweep_run, records = find_records(client, configuration)
    assert sweep_run.info.run_id == sweep_id
    assert [(r.config.seed, r.history) for r in records] == [(0, {1: 0.4}), (1, {1: 0.6})]
    assert {r.config.optimizer_momentum for r in records} == {0.5}  # the rest comes from the configuration


def test_a_seed_run_given_alone_is_one_record_under_its_configurations_sweep(client, sweep):
    experiment_id, sweep_id = sweep
    configuration = make_run(client, experiment_id, role="trial", parent=sweep_id, params=TODAY)
    seed_run = make_run(client, experiment_id, role="seed", parent=configuration, params={"seed": "2"},
                        history=[(1, 0.3)])
    sweep_run, [record] = find_records(client, seed_run)
    assert (sweep_run.info.run_id, record.config.seed, record.config.lr) == (sweep_id, 2, 0.005553999604010706)
    assert record.label.startswith("seed 2")


def test_a_sweep_run_is_refused_as_not_a_trial(client, sweep):
    with pytest.raises(RecordError, match="must be a trial or seed run .* raysweep.role=sweep"):
        find_records(client, sweep[1])


def test_a_misspelt_param_is_refused_with_its_name(client, sweep):
    experiment_id, sweep_id = sweep
    trial = make_run(client, experiment_id, role="trial", parent=sweep_id, params={**TODAY, "lrr": "0.1"},
                     history=[(1, 0.5)])
    with pytest.raises(RecordError, match="unknown trial setting `lrr`"):
        find_records(client, trial)


def test_a_trial_without_val_acc_is_refused(client, sweep):
    experiment_id, sweep_id = sweep
    trial = make_run(client, experiment_id, role="trial", parent=sweep_id, params=TODAY)
    with pytest.raises(RecordError, match="records no `val_acc`"):
        find_records(client, trial)
