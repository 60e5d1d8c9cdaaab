"""The comparison report's pieces on Tune results built by hand: labels, each seed's curve, one row per seed with
its own best value and epoch, and which sweeps are comparisons. (A real sweep with repeats writes the whole report:
tests/test_run.py.)"""

import math

import pandas as pd
import pytest
from ray.tune import Result

from raysweep.comparison import label, seed_curves, seed_rows, wanted
from raysweep.sweep import Sweep, choice, loguniform


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
