"""The comparison report: its pieces on Tune results built by hand (labels, each seed's curve, one row per seed with
its own best value and epoch, which sweeps are comparisons), then the whole record of a real quickstart run with
--repeats 3."""

import math

import pandas as pd
import pytest
import scipy.stats
from mlflow import MlflowClient
from ray.tune import Result

from raysweep.comparison import (
    BEST_SO_FAR_PNG,
    COMPARISON_CSV,
    COMPARISON_PNG,
    IMPORTANCE_CSV,
    IMPORTANCE_PNG,
    SEEDS_CSV,
    label,
    seed_curves,
    seed_rows,
    wanted,
)
from raysweep.sweep import Sweep, choice, loguniform
from tests.sweep_runs import REPO, run_sweep, trials_csv


def result(path: str, config: dict, history: dict) -> Result:
    return Result(metrics={}, checkpoint=None, error=None, path=path, metrics_dataframe=pd.DataFrame(history))


SEARCH = Sweep(name="s", space={"optimizer": choice(["sgd", "adam"]), "lr": loguniform(1e-3, 1e-1)}, repeats=2)
REPEATED = {"seed_metrics/5/val_acc": [0.5, 0.8, 0.7], "seed_metrics/6/val_acc": [0.6, 0.65, 0.9],
            "val_acc": [0.55, 0.725, 0.8]}


def test_comparison_sweeps_and_repeated_seeds_are_compared_and_plain_searches_are_not():
    assert wanted(SEARCH)  # repeats=2
    assert wanted(Sweep(name="g", searcher="grid", trials=({"optimizer": "sgd"}, {"optimizer": "adam"})))
    assert not wanted(Sweep(name="t", space={"lr": loguniform(1e-3, 1e-1)}))


def test_a_configuration_is_labelled_by_what_varies_across_the_sweep():
    config = {"optimizer": "adam", "lr": 0.01, "hidden": [64], "seed": 5}
    assert label(SEARCH, config) == "optimizer=adam lr=0.01"
    assert label(Sweep(name="x"), config) == "all"


def test_each_seeds_curve_comes_from_its_own_columns():
    curves = seed_curves(result("/r/t1", {"seed": 5}, REPEATED), metric="val_acc")
    assert sorted(curves) == [5, 6]
    assert list(curves[6]) == [0.6, 0.65, 0.9]


def test_without_repeats_the_trial_is_its_own_seed():
    single = Result(metrics={}, checkpoint=None, error=None, path="/r/t2",
                    metrics_dataframe=pd.DataFrame({"val_acc": [0.4, 0.6]}))
    curves = seed_curves(single, metric="val_acc")
    assert list(curves) == [0] and list(curves[0]) == [0.4, 0.6]


def test_a_seeds_best_is_its_own_best_epoch_not_the_configurations():
    grid = [result("/r/t1", {}, REPEATED)]
    table = pd.DataFrame([{"trial_id": "t1", "status": "completed", "path": "/r/t1"}])
    rows = seed_rows(SEARCH, table, grid, test={"t1": {5: 0.71, 6: 0.69}})
    assert list(rows.seed) == [5, 6]
    assert list(rows.best_val_acc) == [0.8, 0.9] and list(rows.best_epoch) == [2, 3]
    assert list(rows.test_acc) == [0.71, 0.69]
    min_mode = seed_rows(Sweep(name="m", metric="val_loss", mode="min", repeats=2), table,
                         [result("/r/t1", {}, {"seed_metrics/1/val_loss": [0.9, 0.3, float("nan")]})], test={})
    assert min_mode.best_val_loss.tolist() == [0.3] and min_mode.best_epoch.tolist() == [2]
    assert math.isnan(min_mode.test_acc[0])


@pytest.mark.parametrize("values", [[float("nan"), float("nan")]])
def test_a_seed_that_never_had_a_value_has_no_best(values):
    rows = seed_rows(SEARCH, pd.DataFrame([{"trial_id": "t", "status": "diverged", "path": "/r/t"}]),
                     [result("/r/t", {}, {"seed_metrics/0/val_acc": values})], test={})
    assert math.isnan(rows.best_val_acc[0]) and rows.best_epoch[0] is None


# ------------------------------------------------------------------ a real quickstart run with --repeats 3
@pytest.fixture(scope="module")
def repeated(tmp_path_factory, ray_address):
    """The quickstart search with 3 seeds per configuration: 6 configurations (enough for importance), 2 epochs,
    on a 400-example subset, on the session's Ray cluster."""
    folder = tmp_path_factory.mktemp("repeats")
    done = run_sweep(REPO / "sweeps" / "quickstart.py", folder, "--repeats", "3", "--num-samples", "6",
                     "--max-epochs", "2", "--set", "subset=400", "--set", "grace_period=1", address=ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, done.stdout


def test_every_artifact_of_the_comparison_is_in_the_record(repeated):
    folder, stdout = repeated
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name("quickstart")
    sweep_run, = client.search_runs([experiment.experiment_id], "tags.`raysweep.role` = 'sweep'")
    artifacts = {a.path for a in client.list_artifacts(sweep_run.info.run_id, "report")}
    for name in (COMPARISON_CSV, COMPARISON_PNG, IMPORTANCE_CSV, IMPORTANCE_PNG, BEST_SO_FAR_PNG):
        assert f"report/{name}" in artifacts, sorted(artifacts)
    assert SEEDS_CSV in {a.path for a in client.list_artifacts(sweep_run.info.run_id)}
    assert any(key.startswith("importance.") for key in sweep_run.data.metrics)
    assert "vs the best" in stdout or "indistinguishable" in stdout or "best" in stdout.split("raysweep:")[-1]


def test_each_configuration_has_a_nested_run_per_seed_and_its_mean_and_std(repeated):
    folder, _ = repeated
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name("quickstart")
    trials = client.search_runs([experiment.experiment_id], "tags.`raysweep.role` = 'trial'")
    assert len(trials) == 6
    for trial in trials:
        nested = f"tags.`mlflow.parentRunId` = '{trial.info.run_id}' AND tags.`raysweep.role` = 'seed'"
        seeds = client.search_runs([experiment.experiment_id], nested)
        assert sorted(run.data.tags["raysweep.seed"] for run in seeds) == ["0", "1", "2"]
        mean = [m.value for m in client.get_metric_history(trial.info.run_id, "val_acc")]
        curves = [[m.value for m in client.get_metric_history(run.info.run_id, "val_acc")] for run in seeds]
        assert len(mean) == len(curves[0]) and "val_acc_std" in trial.data.metrics
        for epoch, value in enumerate(mean):
            assert value == pytest.approx(sum(curve[epoch] for curve in curves) / 3)


def test_trials_csv_has_a_row_per_configuration_and_seeds_csv_a_row_per_seed_with_scipys_interval(repeated):
    folder, _ = repeated
    configurations = trials_csv(folder, "quickstart")
    run_folder = sorted((folder / "results" / "quickstart").iterdir())[-1]
    seeds = pd.read_csv(run_folder / SEEDS_CSV)
    assert len(configurations) == 6 and len(seeds) == 18
    for row in configurations:
        mine = seeds[seeds.trial_id == row["trial_id"]].best_val_acc.to_numpy(dtype=float)
        assert int(row["n"]) == 3 and float(row["best_val_acc_mean"]) == pytest.approx(mine.mean())
        low, high = scipy.stats.t.interval(0.95, 2, loc=mine.mean(), scale=scipy.stats.sem(mine))
        if mine.std() > 0:
            assert (float(row["best_val_acc_ci_low"]), float(row["best_val_acc_ci_high"])) == pytest.approx((low, high))
