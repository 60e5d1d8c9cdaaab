"""Parameter importance over synthetic sweeps where one known setting decides the metric, and best-so-far curves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysweep import importance
from raysweep.sweep import choice, loguniform, quniform, uniform

ROOT = Path(__file__).resolve().parents[1]

# The quickstart's shape: a conditional optimizer, a log-scale learning rate, a categorical and a plain number.
SPACE = {
    "optimizer": choice({"sgd": {"optimizer.momentum": uniform(0.0, 0.95)},
                         "adam": {"optimizer.beta1": uniform(0.8, 0.95)}}),
    "lr": loguniform(1e-4, 1e-1),
    "dropout": uniform(0.0, 0.5),
    "batch_size": choice([32, 64, 128]),
}

# Each metric depends on one setting only (plus noise); the others are drawn but ignored.
METRICS = {
    "lr": lambda t: 0.9 - 0.1 * (np.log10(t.lr) + 2.5) ** 2,  # best at lr = 10^-2.5
    "dropout": lambda t: 0.9 - 0.5 * t.dropout,
    "batch_size": lambda t: 0.9 - 0.001 * t.batch_size,
    "optimizer": lambda t: np.where(t.optimizer == "adam", 0.9, 0.8),
    # Only sgd trials have a momentum; adam sits at sgd's best, so the optimizer alone decides little.
    "optimizer.momentum": lambda t: np.where(t.optimizer == "sgd", 0.9 - 0.4 * (t["optimizer.momentum"] - 0.9) ** 2,
                                             0.897),
}


def _sweep(*, n: int = 30, seed: int = 0, matters: str = "lr") -> pd.DataFrame:
    """n random trials of SPACE, as flat records (children only under their option), with best_val_acc."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        row = {"optimizer": str(rng.choice(["sgd", "adam"])), "lr": 10 ** rng.uniform(-4, -1),
               "dropout": rng.uniform(0, 0.5), "batch_size": int(rng.choice([32, 64, 128]))}
        if row["optimizer"] == "sgd":
            row["optimizer.momentum"] = rng.uniform(0.0, 0.95)
        else:
            row["optimizer.beta1"] = rng.uniform(0.8, 0.95)
        rows.append(row)
    trials = pd.DataFrame(rows)
    trials["best_val_acc"] = METRICS[matters](trials) + rng.normal(0, 0.005, n)
    return trials


@pytest.mark.parametrize("matters", ["lr", "dropout", "batch_size", "optimizer"])
def test_fanova_ranks_the_one_setting_that_matters_first(matters):
    table = importance.param_importance(_sweep(matters=matters), space=SPACE)
    assert table.setting.iloc[0] == matters
    assert table.importance.iloc[0] > 0.5  # most of the variance, not a narrow win
    assert table.importance.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("matters", ["lr", "dropout", "optimizer.momentum"])
def test_ped_anova_ranks_the_one_setting_that_matters_first_conditional_child_included(matters):
    table = importance.param_importance(_sweep(matters=matters), space=SPACE, evaluator="ped_anova")
    assert table.setting.iloc[0] == matters


def test_lower_is_better_in_mode_min():
    # PED-ANOVA looks at the top trials, so the direction matters: a loss best at lr = 10^-2.5.
    trials = _sweep(matters="lr")
    trials["best_val_loss"] = 1 - trials.pop("best_val_acc")
    table = importance.param_importance(trials, space=SPACE, metric="best_val_loss", mode="min", evaluator="ped_anova")
    assert table.setting.iloc[0] == "lr"


def test_a_child_counts_only_under_its_parent_even_when_the_record_holds_a_default():
    trials = _sweep(matters="lr")
    sgd = trials.optimizer == "sgd"
    # MLflow's params hold every setting, defaults included: adam trials then show a momentum they never used.
    trials.loc[~sgd, "optimizer.momentum"] = 0.0
    fanova = importance.param_importance(trials, space=SPACE).set_index("setting")
    ped = importance.param_importance(trials, space=SPACE, evaluator="ped_anova").set_index("setting")
    assert fanova.loc["optimizer.momentum", "trials"] == sgd.sum() < len(trials)
    assert fanova.loc["optimizer.beta1", "trials"] == (~sgd).sum()
    assert fanova.loc["lr", "trials"] == len(trials)
    assert math.isnan(fanova.loc["optimizer.momentum", "importance"])  # fANOVA: not assessed
    assert math.isfinite(ped.loc["optimizer.momentum", "importance"])


def test_values_recorded_as_text_match_their_choices():
    # MLflow and CSV files give "64" for 64; the importance must not change.
    trials = _sweep(matters="batch_size")
    as_text = trials.assign(batch_size=trials.batch_size.astype(str))
    pd.testing.assert_frame_equal(importance.param_importance(as_text, space=SPACE),
                                  importance.param_importance(trials, space=SPACE))


def test_failed_trials_are_left_out():
    trials = _sweep(matters="lr")
    trials.loc[[0, 1, 2], "best_val_acc"] = [math.nan, math.inf, -math.inf]
    table = importance.param_importance(trials, space=SPACE).set_index("setting")
    assert table.loc["lr", "trials"] == len(trials) - 3
    assert table.index[0] == "lr"


def test_a_rounded_value_just_outside_its_range_is_accepted():
    # HyperOpt's quniform(0.5, 4, 1) rounds a draw of 0.6 to 0: outside [0.5, 4], yet a real trial.
    space = {"layers": quniform(0.5, 4, 1), "lr": loguniform(1e-4, 1e-1)}
    rng = np.random.default_rng(1)
    trials = pd.DataFrame({"layers": [0, 1, 2, 3, 4] * 4, "lr": 10 ** rng.uniform(-4, -1, 20)})
    trials["best_val_acc"] = 0.5 + 0.1 * trials.layers + rng.normal(0, 0.005, 20)
    assert importance.param_importance(trials, space=space).setting.iloc[0] == "layers"


@pytest.mark.parametrize("sweep_file", ["sweeps/quickstart.py", "tests/sweeps/conditional.py"])
def test_real_sweep_spaces_as_hyperopt_draws_them(sweep_file):
    # The spaces users write (nested conditionals, bool and mixed options, quniform), drawn by HyperOpt as TPE's
    # start-up phase draws them and flattened as trials.csv holds them; only the learning rate matters.
    from hyperopt.pyll import stochastic

    from raysweep import space as spaces
    from raysweep.config import flatten
    from raysweep.sweep_file import load

    space = load(ROOT / sweep_file).space
    rng = np.random.default_rng(0)
    hyperopt_space = spaces.to_hyperopt(space)
    trials = pd.DataFrame([flatten(stochastic.sample(hyperopt_space, rng=rng)) for _ in range(40)])
    trials["best_val_acc"] = METRICS["lr"](trials) + rng.normal(0, 0.005, len(trials))
    assert importance.param_importance(trials, space=space).setting.iloc[0] == "lr"
    ped = importance.param_importance(trials, space=space, evaluator="ped_anova").set_index("setting")
    # Each setting counted in exactly the trials whose record holds it (the draws hold only active children).
    assert ped.trials.to_dict() == {name: trials[name].notna().sum() for name in ped.index}
    assert set(ped.index) == set(trials.columns) - {"best_val_acc"}
    assert np.isfinite(ped.importance).all()


@pytest.mark.parametrize(("change", "kwargs", "message"), [
    (lambda t: t.assign(optimizer="nadam"), {}, "setting 'optimizer' must be one of ['sgd', 'adam'], but a trial has "
                                                "'nadam'"),
    (lambda t: t.head(4), {}, f"needs at least {importance.MIN_TRIALS} trials with a finite 'best_val_acc', but got 4"),
    (lambda t: t, {"evaluator": "shap"}, "evaluator must be one of ('fanova', 'ped_anova'), but got 'shap'"),
    (lambda t: t, {"metric": "val_acc"}, "metric column 'val_acc' must be in the trials' table"),
    (lambda t: t.assign(dropout="high"), {}, "setting 'dropout' must hold numbers, but a trial has 'high'"),
])
def test_bad_input_gets_a_one_line_error_naming_the_field(change, kwargs, message):
    with pytest.raises(ValueError) as error:
        importance.param_importance(change(_sweep()), space=SPACE, **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------------ best so far
# Worked by hand. Start order: a (0 s), c (2 s), b (5 s), d (7 s); end order: c (5 s), b (6 s), d (8 s), a (10 s).
TIMED = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "start_time": [0.0, 5.0, 2.0, 7.0],
                      "wall_time_s": [10.0, 1.0, 3.0, 1.0], "best_val_acc": [0.5, 0.7, math.nan, 0.6]})


def test_best_so_far_against_trials_and_wall_time_max():
    curves = importance.best_so_far(TIMED)
    assert curves.by_trial.trial.tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(curves.by_trial.value, [0.5, math.nan, 0.7, 0.6])
    np.testing.assert_array_equal(curves.by_trial.best, [0.5, 0.5, 0.7, 0.7])
    assert curves.by_time.time_s.tolist() == [5.0, 6.0, 8.0, 10.0]
    np.testing.assert_array_equal(curves.by_time.best, [math.nan, 0.7, 0.7, 0.7])


def test_best_so_far_in_mode_min_with_datetimes_and_end_times():
    start = pd.Timestamp("2026-11-29 12:00:00", tz="UTC")
    timed = TIMED.assign(start_time=start + pd.to_timedelta(TIMED.start_time, unit="s"),
                         end_time=start + pd.to_timedelta(TIMED.start_time + TIMED.wall_time_s, unit="s"))
    curves = importance.best_so_far(timed.drop(columns="wall_time_s"), mode="min", end="end_time")
    np.testing.assert_array_equal(curves.by_trial.best, [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(curves.by_time.best, [math.nan, 0.7, 0.6, 0.5])
    assert curves.by_time.time_s.tolist() == [5.0, 6.0, 8.0, 10.0]


def test_best_so_far_names_a_missing_column_and_an_empty_table():
    with pytest.raises(ValueError, match="column 'start_time' must be in the trials' table"):
        importance.best_so_far(TIMED.drop(columns="start_time"))
    with pytest.raises(ValueError, match="the trials' table must have at least one row"):
        importance.best_so_far(TIMED.iloc[:0])
