"""Which settings explain a search sweep's metric (Optuna's importance evaluators), and the best metric so far against
the number of trials and against wall time.

`param_importance` turns the trials' records (one row per trial: the flat settings and the metric) into Optuna trials
whose distributions come from the sweep's own domains, and asks Optuna's evaluator; nothing here re-implements it.
A conditional child (e.g. `optimizer.momentum` under sgd) exists in a trial only when its parent chose that option:
the space is walked per trial, so a default value a record may hold for an inactive child is never counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd

from raysweep.sweep import Choice, Uniform

__all__ = ["EVALUATORS", "MIN_TRIALS", "BestSoFar", "best_so_far", "param_importance"]

# Below this many trials with a value, any ranking of settings is noise; an error says so instead of a chart of it.
MIN_TRIALS = 5
EVALUATORS = ("fanova", "ped_anova")
MODES = ("max", "min")


def param_importance(trials: pd.DataFrame, *, space: dict[str, Any], metric: str = "best_val_acc", mode: str = "max",
                     evaluator: str = "fanova", seed: int = 0) -> pd.DataFrame:
    """One row per searched setting that some trial has: setting, importance (summing to 1 over the assessed
    settings), trials (how many trials with a finite metric have it); the most important first.

    `space` is the sweep's `space` (raysweep.sweep domains). Trials whose metric is NaN or infinite (failed before
    they had a value) are left out. The evaluators:
    - "fanova" (default): Optuna's fANOVA, the share of the metric's variance each setting explains in a random
      forest fitted to the trials (seeded by `seed`, so the same records give the same table). It assesses only the
      settings every trial has: a conditional child gets NaN ("not assessed").
    - "ped_anova": Optuna's PED-ANOVA, how much each setting matters to reach the top trials. It ranks conditional
      children with the rest (Conditional PED-ANOVA, optuna >= 5.0), but on sweeps of 20-60 trials it is the less
      steady of the two. On synthetic sweeps where one categorical setting alone decides the metric (20, 30 and 60
      trials, 5 draws each, measured when this was written), with 5 trials in its top (Optuna's advised minimum) it
      ranked that setting first in 1 to 4 of 5 draws, fANOVA in 5 of 5; a top of 15 trials raised it to 4 or 5 of 5,
      hence a top quantile of 15/n, kept between Optuna's default 0.1 and 0.5.
    """
    _check_metric("param_importance", trials, metric=metric, mode=mode)
    _check_space(space, evaluator=evaluator)
    values = pd.to_numeric(trials[metric], errors="coerce").to_numpy(dtype=float)
    finite = np.isfinite(values)
    if finite.sum() < MIN_TRIALS:
        raise ValueError(f"param_importance: needs at least {MIN_TRIALS} trials with a finite {metric!r}, "
                         f"but got {int(finite.sum())}")
    rows = [row for row, ok in zip(trials.to_dict("records"), finite, strict=True) if ok]
    actives = [_active(space, row) for row in rows]
    _widen_to_observed(actives)

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per call about a new in-memory study
    try:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize",
                                    sampler=optuna.samplers.RandomSampler(seed=seed))
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials([
        optuna.trial.create_trial(params={name: value for name, (_, value) in active.items()},
                                  distributions={name: dist for name, (dist, _) in active.items()},
                                  value=float(value))
        for active, value in zip(actives, values[finite], strict=True)])

    if evaluator == "ped_anova":
        quantile = min(0.5, max(0.1, 15 / len(rows)))
        engine = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
    else:
        engine = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    scores = optuna.importance.get_param_importances(study, evaluator=engine)

    counts: dict[str, int] = {}
    for active in actives:
        for name in active:
            counts[name] = counts.get(name, 0) + 1
    table = pd.DataFrame({"setting": list(counts), "importance": [scores.get(n, math.nan) for n in counts],
                          "trials": list(counts.values())})
    return table.sort_values("importance", ascending=False, kind="stable", na_position="last").reset_index(drop=True)


def _active(space: dict[str, Any], row: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """setting -> (Optuna distribution, Optuna value) for the settings this trial has, children only under their
    chosen option. A setting the record lacks (NaN, None) is skipped with its children."""
    active: dict[str, tuple[Any, Any]] = {}
    for name, domain in space.items():
        value = row.get(name)
        if _missing(value):
            continue
        if isinstance(domain, Choice):
            index = _option_index(name, domain, value)
            # Options become their text: Optuna's categories must be plain scalars, and lists (e.g. hidden sizes)
            # are not; the importance is per setting, so the spelling of a value never shows.
            choices = tuple(repr(option) for option in domain.options)
            active[name] = (optuna.distributions.CategoricalDistribution(choices), choices[index])
            if domain.children and domain.children[index]:
                active |= _active(domain.children[index], row)
        elif isinstance(domain, Uniform):
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"param_importance: setting {name!r} must hold numbers, but a trial has "
                                 f"{value!r}") from None
            # q is left out: a rounded number is still a number on the same (log) scale, and Optuna's step would
            # need (high - low) to be a multiple of it.
            active[name] = (optuna.distributions.FloatDistribution(domain.low, domain.high, log=domain.log), number)
    return active


def _widen_to_observed(actives: list[dict[str, tuple[Any, Any]]]) -> None:
    """Stretch each float range over the values the trials hold: HyperOpt's q-rounding can step just outside
    [low, high] (quniform(0.5, 4, 1) gives 0), and Optuna refuses a value outside its distribution."""
    spans: dict[Any, tuple[float, float]] = {}
    for active in actives:
        for dist, value in active.values():
            if isinstance(dist, optuna.distributions.FloatDistribution):
                low, high = spans.get(dist, (dist.low, dist.high))
                spans[dist] = (min(low, value), max(high, value))
    for active in actives:
        for name, (dist, value) in active.items():
            if dist in spans and spans[dist] != (dist.low, dist.high):
                low, high = spans[dist]
                active[name] = (optuna.distributions.FloatDistribution(low, high, log=dist.log), value)


def _option_index(name: str, domain: Choice, value: Any) -> int:
    """Which option a recorded value is: equal, equal as text ("64" from MLflow or a CSV), or equal as a number."""
    for i, option in enumerate(domain.options):
        if value == option or str(value) == str(option):
            return i
        try:
            if float(value) == float(option):
                return i
        except (TypeError, ValueError):
            pass
    raise ValueError(f"param_importance: setting {name!r} must be one of {list(domain.options)}, but a trial has "
                     f"{value!r}")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class BestSoFar:
    """The best metric so far: `by_trial` (trial = 1, 2, ... in start order) and `by_time` (time_s = seconds from
    the first start to each trial's end, in end order). Both also hold each trial's own value."""

    by_trial: pd.DataFrame  # trial, value, best
    by_time: pd.DataFrame  # time_s, value, best


def best_so_far(trials: pd.DataFrame, *, metric: str = "best_val_acc", mode: str = "max", start: str = "start_time",
                end: str | None = None, duration: str = "wall_time_s") -> BestSoFar:
    """The best `metric` after each trial in start order, and over wall time as trials end.

    `start` holds each trial's start as datetimes or as seconds; a trial ends at `end` (same units) if given, else
    at start + `duration` seconds. A trial without a finite metric (failed) counts as a trial but never moves the best;
    before the first value the best is NaN."""
    _check_metric("best_so_far", trials, metric=metric, mode=mode)
    for column in [start, end or duration]:
        if column not in trials.columns:
            raise ValueError(f"best_so_far: column {column!r} must be in the trials' table, but it has "
                             f"{list(trials.columns)}")
    if trials.empty:
        raise ValueError("best_so_far: the trials' table must have at least one row, but it is empty")
    starts = _seconds(trials[start])
    ends = _seconds(trials[end]) if end else starts + pd.to_numeric(trials[duration], errors="coerce").to_numpy()
    if np.isnan(starts).any() or np.isnan(ends).any():
        raise ValueError(f"best_so_far: every trial must have a {start!r} and an end, but some have none")
    origin = starts.min()
    values = pd.to_numeric(trials[metric], errors="coerce").to_numpy(dtype=float)
    values = np.where(np.isfinite(values), values, np.nan)
    running = np.fmax.accumulate if mode == "max" else np.fmin.accumulate  # fmax/fmin skip NaN

    by_start = np.argsort(starts, kind="stable")
    by_trial = pd.DataFrame({"trial": np.arange(1, len(values) + 1), "value": values[by_start],
                             "best": running(values[by_start])})
    by_end = np.argsort(ends, kind="stable")
    by_time = pd.DataFrame({"time_s": ends[by_end] - origin, "value": values[by_end],
                            "best": running(values[by_end])})
    return BestSoFar(by_trial=by_trial, by_time=by_time)


def _seconds(column: pd.Series) -> np.ndarray:
    """Datetimes or numbers as float seconds."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return (column - pd.Timestamp(0, tz=column.dt.tz)).dt.total_seconds().to_numpy(dtype=float)
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)


def _check_metric(where: str, trials: pd.DataFrame, *, metric: str, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be one of {MODES}, but got {mode!r}")
    if metric not in trials.columns:
        raise ValueError(f"{where}: metric column {metric!r} must be in the trials' table, but it has "
                         f"{list(trials.columns)}")


def _check_space(space: dict[str, Any], *, evaluator: str) -> None:
    if evaluator not in EVALUATORS:
        raise ValueError(f"param_importance: evaluator must be one of {EVALUATORS}, but got {evaluator!r}")
    for name, domain in space.items():
        if not isinstance(domain, Choice | Uniform):
            raise ValueError(f"param_importance: space[{name!r}] must be a raysweep.sweep domain (choice, uniform, "
                             f"loguniform, quniform), but got {type(domain).__name__}")
