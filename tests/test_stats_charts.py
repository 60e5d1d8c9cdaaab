"""The comparison charts: real PNGs whose plotted order and values (read back from the Axes) are the right ones."""

from __future__ import annotations

import math

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from raysweep import importance, stats, stats_charts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEEDS = {  # five seeds each; "single" has one, "lost" none with a value
    "adam": [0.950, 0.960, 0.940, 0.955, 0.945],
    "sgd": [0.920, 0.925, 0.915, 0.930, 0.910],
    "rmsprop": [0.949, 0.958, 0.941, 0.953, 0.946],
    "adagrad": [0.890, 0.900, 0.880, 0.905, 0.885],
}


def _table(seeds: dict[str, list[float]], **kwargs) -> pd.DataFrame:
    rows = [{"config": c, "seed": i, "best_val_acc": v} for c, values in seeds.items() for i, v in enumerate(values)]
    return stats.comparison_table(pd.DataFrame(rows), **kwargs)


def _assert_png(path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 100 and width > 100


def test_comparison_chart_draws_configurations_best_first_with_their_intervals(tmp_path):
    table = _table(SEEDS).sample(frac=1, random_state=3)  # the chart sorts; it must not trust the row order
    drawn = stats_charts.comparison_chart(table, path=tmp_path / "comparison.png")
    _assert_png(drawn.path)
    means = {c: np.mean(v) for c, v in SEEDS.items()}
    assert drawn.data["config"] == sorted(means, key=means.get, reverse=True)
    assert drawn.data["best"] == ["adam"]
    for i, config in enumerate(drawn.data["config"]):
        x = np.asarray(SEEDS[config])
        low, high = scipy_stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=scipy_stats.sem(x))
        assert drawn.data["mean"][i] == pytest.approx(x.mean(), abs=1e-12)
        assert (drawn.data["ci_low"][i], drawn.data["ci_high"][i]) == pytest.approx((low, high), abs=1e-12)


def test_comparison_chart_puts_the_lowest_first_in_mode_min_and_leaves_out_configurations_without_a_value(tmp_path):
    seeds = {"low": [0.30, 0.31, 0.29], "high": [0.40, 0.42, 0.41], "single": [0.35], "lost": [math.nan, math.nan]}
    rows = [{"config": c, "seed": i, "val_loss": v} for c, values in seeds.items() for i, v in enumerate(values)]
    table = stats.comparison_table(pd.DataFrame(rows), metric="val_loss", mode="min")
    drawn = stats_charts.comparison_chart(table, path=tmp_path / "loss.png", metric="val_loss", mode="min")
    assert drawn.data["config"] == ["low", "single", "high"]
    assert drawn.data["best"] == ["low"]
    # One seed: a point without an interval.
    assert drawn.data["ci_low"][1] == drawn.data["ci_high"][1] == pytest.approx(0.35)


def test_importance_chart_draws_bars_most_important_first(tmp_path):
    table = pd.DataFrame({"setting": ["dropout", "optimizer.momentum", "lr", "batch_size"],
                          "importance": [0.25, math.nan, 0.7, 0.05], "trials": [30, 14, 30, 30]})
    drawn = stats_charts.importance_chart(table, path=tmp_path / "importance.png")
    _assert_png(drawn.path)
    assert drawn.data["setting"] == ["lr", "dropout", "batch_size", "optimizer.momentum"]
    assert drawn.data["importance"] == pytest.approx([0.7, 0.25, 0.05])  # no bar for the one not assessed


def test_best_so_far_chart_draws_the_running_best(tmp_path):
    # Worked by hand as in test_importance: start order a, c, b, d; end order c (5 s), b (6 s), d (8 s), a (10 s).
    timed = pd.DataFrame({"start_time": [0.0, 5.0, 2.0, 7.0], "wall_time_s": [10.0, 1.0, 3.0, 1.0],
                          "best_val_acc": [0.5, 0.7, math.nan, 0.6]})
    drawn = stats_charts.best_so_far_chart(importance.best_so_far(timed), path=tmp_path / "best_so_far.png")
    _assert_png(drawn.path)
    assert drawn.data["trial"] == [1, 2, 3, 4]
    assert drawn.data["best_by_trial"] == [0.5, 0.5, 0.7, 0.7]
    assert drawn.data["time_s"] == [5.0, 6.0, 8.0, 10.0]
    np.testing.assert_array_equal(drawn.data["best_by_time_s"], [math.nan, 0.7, 0.7, 0.7])


def test_a_table_without_the_metric_gets_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="column 'test_acc_mean' must be in the table"):
        stats_charts.comparison_chart(_table(SEEDS), path=tmp_path / "x.png", metric="test_acc")
    assert not (tmp_path / "x.png").exists()
