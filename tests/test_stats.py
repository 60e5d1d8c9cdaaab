"""The comparison statistics: intervals and p-values against scipy and hand-worked cases, Holm, the verdicts."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from raysweep import stats

BEST = [0.95, 0.96, 0.94, 0.955, 0.945]  # five seeds of a strong configuration


def _seeds(configs: dict[str, list[float]], *, seeds: dict[str, list[int]] | None = None,
           column: str = "best_val_acc") -> pd.DataFrame:
    """One row per (config, seed); seeds count from 0 unless given."""
    return pd.DataFrame([{"config": name, "seed": (seeds or {}).get(name, range(len(values)))[i], column: value}
                         for name, values in configs.items() for i, value in enumerate(values)])


def _row(table: pd.DataFrame, config: str) -> pd.Series:
    return table.set_index("config").loc[config]


def test_interval_matches_a_hand_worked_case_with_three_seeds():
    # mean 0.92, std 0.01; the t quantile t(0.975, df=2) = 4.302653 from a printed table:
    # half width 4.302653 * 0.01 / sqrt(3) = 0.0248414.
    table = stats.comparison_table(_seeds({"a": [0.91, 0.92, 0.93]}))
    row = _row(table, "a")
    assert row.best_val_acc_n == 3
    assert row.best_val_acc_mean == pytest.approx(0.92, abs=1e-12)
    assert row.best_val_acc_std == pytest.approx(0.01, abs=1e-12)
    assert row.best_val_acc_ci_low == pytest.approx(0.92 - 0.0248414, abs=1e-6)
    assert row.best_val_acc_ci_high == pytest.approx(0.92 + 0.0248414, abs=1e-6)


def test_intervals_and_p_values_match_scipy_on_random_seeds():
    rng = np.random.default_rng(7)
    configs = {"a": 0.95 + rng.normal(0, 0.004, 6), "b": 0.94 + rng.normal(0, 0.004, 6),
               "c": 0.945 + rng.normal(0, 0.01, 4)}
    seeds = _seeds({k: list(v) for k, v in configs.items()})
    seeds["test_acc"] = seeds.best_val_acc - 0.01 + rng.normal(0, 0.003, len(seeds))
    table = stats.comparison_table(seeds, confidence=0.9)
    for name in configs:
        for metric in ("best_val_acc", "test_acc"):
            x = seeds.loc[seeds.config == name, metric].to_numpy()
            low, high = scipy_stats.t.interval(0.9, len(x) - 1, loc=x.mean(), scale=scipy_stats.sem(x))
            assert _row(table, name)[f"{metric}_ci_low"] == pytest.approx(low, rel=1e-12)
            assert _row(table, name)[f"{metric}_ci_high"] == pytest.approx(high, rel=1e-12)
    best = table.config.iloc[0]
    assert best == max(configs, key=lambda k: configs[k].mean())
    for name in configs:
        if name != best:
            n = min(len(configs[name]), len(configs[best]))  # seeds 0..n-1 are shared
            expected = scipy_stats.ttest_rel(configs[name][:n], configs[best][:n]).pvalue
            assert _row(table, name).p_value == pytest.approx(expected, rel=1e-12)
            assert _row(table, name).n_pairs == n


def test_paired_p_matches_the_closed_form_for_two_degrees_of_freedom():
    # Differences -0.01, -0.02, -0.03: mean -0.02, sd 0.01, t = -0.02 / (0.01 / sqrt 3) = -2 sqrt 3.
    # With df = 2 the t CDF is 1/2 + t / (2 sqrt(t^2 + 2)), so the two-sided p is 1 - |t| / sqrt(t^2 + 2).
    t = 2 * math.sqrt(3)
    table = stats.comparison_table(_seeds({"best": [0.95, 0.96, 0.97], "other": [0.94, 0.94, 0.94]}))
    assert _row(table, "other").p_value == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)
    assert _row(table, "other").mean_diff == pytest.approx(-0.02, abs=1e-12)


def test_pairs_are_matched_by_seed_not_by_position():
    # "other" ran seeds 2..6, the best 0..4: only seeds 2, 3, 4 pair up.
    best = dict(enumerate([0.95, 0.96, 0.94, 0.955, 0.945]))
    other = dict(zip(range(2, 7), [0.93, 0.95, 0.94, 0.90, 0.99], strict=True))
    seeds = _seeds({"best": list(best.values()), "other": list(other.values())},
                   seeds={"best": list(best), "other": list(other)})
    row = _row(stats.comparison_table(seeds), "other")
    shared = [2, 3, 4]
    assert row.n_pairs == 3
    expected = scipy_stats.ttest_rel([other[s] for s in shared], [best[s] for s in shared]).pvalue
    assert row.p_value == pytest.approx(expected, rel=1e-12)


def test_holm_on_a_hand_worked_example():
    # Sorted 0.01, 0.03, 0.04: 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06.
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # NaN is not a test: m = 2. Adjusted values are capped at 1.
    adjusted = stats.holm([math.nan, 0.01, 0.04])
    assert math.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([0.02, 0.04])
    assert stats.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_verdicts_name_the_best_the_worse_and_the_indistinguishable():
    configs = {
        "best": BEST,
        "clearly_worse": [b - d for b, d in zip(BEST, [0.02, 0.03, 0.025, 0.022, 0.028], strict=True)],
        "close": [b - d for b, d in zip(BEST, [0.001, -0.004, 0.006, 0.002, -0.001], strict=True)],
        "one_seed": [0.90],
    }
    table = stats.comparison_table(_seeds(configs))
    verdicts = dict(zip(table.config, table.verdict, strict=True))
    worse_p = _row(table, "clearly_worse").p_holm
    assert table.config.iloc[0] == "best"
    assert verdicts == {"best": "best", "clearly_worse": f"worse (p = {worse_p:.4f})",
                        "close": "indistinguishable from the best at 5%", "one_seed": "n < 2: no test"}
    # Two tests (one_seed has none): Holm doubles the smaller p, at least.
    raw = scipy_stats.ttest_rel(configs["clearly_worse"], BEST).pvalue
    assert worse_p == pytest.approx(2 * raw, rel=1e-9)


def test_holm_turns_two_raw_significant_differences_into_indistinguishable():
    # Each alone has p = 0.030 < 0.05; two comparisons: Holm gives 0.060 to both.
    worse = [b - d for b, d in zip(BEST, [0.006, 0.012, 0.0, 0.010, 0.006], strict=True)]
    table = stats.comparison_table(_seeds({"best": BEST, "x": worse, "y": list(worse)}))
    assert (table.p_value.iloc[1:] < 0.05).all()
    assert table.p_holm.iloc[1:].tolist() == pytest.approx([0.0597339] * 2, rel=1e-4)
    assert table.verdict.iloc[1:].tolist() == ["indistinguishable from the best at 5%"] * 2


def test_lower_is_better_in_mode_min():
    losses = {"high": [0.40, 0.42, 0.41, 0.43, 0.40], "low": [0.30, 0.31, 0.29, 0.30, 0.32]}
    table = stats.comparison_table(_seeds(losses, column="val_loss"), metric="val_loss", mode="min")
    assert table.config.tolist() == ["low", "high"]
    assert table.verdict.iloc[1].startswith("worse (p = ")


def test_a_better_paired_result_than_the_best_by_mean_says_better():
    # "other" shares seeds 0-2 with the best and beats it on each; the best's mean rides on its seeds 3 and 4.
    seeds = _seeds({"best": [0.90, 0.91, 0.92, 0.99, 0.99], "other": [0.93, 0.945, 0.95]})
    row = _row(stats.comparison_table(seeds), "other")
    assert row.mean_diff > 0 and row.verdict.startswith("better (p = ")


def test_identical_and_constantly_shifted_seeds_are_decided_without_scipy_warnings():
    shifted = [b - 0.01 for b in BEST]
    seeds = _seeds({"best": BEST, "same": list(BEST), "shifted": shifted})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy warns about the zero variance if asked
        table = stats.comparison_table(seeds)
    assert _row(table, "same").p_value == 1.0
    assert _row(table, "same").verdict == "indistinguishable from the best at 5%"
    assert _row(table, "shifted").p_value == 0.0
    assert _row(table, "shifted").verdict == "worse (p = < 0.0001)"


def test_a_nan_seed_is_left_out_and_counted():
    values = [0.95, 0.96, math.nan, 0.955, 0.945]
    seeds = _seeds({"best": BEST, "diverged_once": [v - 0.01 if math.isfinite(v) else v for v in values]})
    table = stats.comparison_table(seeds)
    row = _row(table, "diverged_once")
    finite = [v - 0.01 for v in values if math.isfinite(v)]
    assert (row.best_val_acc_n, row.best_val_acc_missing, row.n_pairs) == (4, 1, 4)
    assert row.best_val_acc_mean == pytest.approx(np.mean(finite), abs=1e-12)
    text = stats.format_table(table)
    assert "  4*  " in text and "seeds without a value" in text


def test_format_table_is_fixed_width_and_best_first():
    configs = {"sgd": [b - 0.03 for b in BEST], "adam with a rather long label indeed": BEST}
    seeds = _seeds(configs)
    seeds["test_acc"] = seeds.best_val_acc - 0.01
    lines = stats.format_table(stats.comparison_table(seeds), width=20).splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("adam with a rather ~") and lines[1].endswith("best")
    assert lines[2].startswith("sgd") and "worse (p = " in lines[2]
    # Every column starts at the same offset on every line.
    for column in ("best_val_acc mean", "test_acc mean", "vs best"):
        offset = lines[0].index(column)
        assert all(line[offset - 2: offset] == "  " and line[offset] != " " for line in lines[1:])
    assert f"{np.mean(BEST):.4f} [" in lines[1]


@pytest.mark.parametrize(("change", "kwargs", "message"), [
    (lambda s: s.drop(columns="seed"), {}, "column 'seed' must be in the seeds' table"),
    (lambda s: s, {"mode": "maximize"}, "mode must be one of ('max', 'min'), but got 'maximize'"),
    (lambda s: pd.concat([s, s.iloc[:1]]), {}, "each (config, seed) must appear once, but config 'a' has seed 0"),
    (lambda s: s.assign(best_val_acc=["x", 0.9, 0.8]), {}, "column 'best_val_acc' must hold numbers, but has 'x'"),
    (lambda s: s.assign(best_val_acc=math.nan), {}, "at least one seed must have a finite 'best_val_acc'"),
    (lambda s: s, {"confidence": 95}, "`0 < confidence < 1` must hold, but got confidence=95"),
    (lambda s: s.assign(seed=[0, None, 2]), {}, "every row must have a 'seed', but 1 have none"),
])
def test_bad_input_gets_a_one_line_error_naming_the_field(change, kwargs, message):
    seeds = change(_seeds({"a": [0.9, 0.91, 0.92]}))
    with pytest.raises(ValueError) as error:
        stats.comparison_table(seeds, **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)
