"""Comparing configurations trained with several seeds: each one's mean and Student-t confidence interval, and a paired
test of each configuration against the best one, with Holm's correction across the comparisons.

`comparison_table` builds the table from one row per (configuration, seed); `format_table` renders it as the few
fixed-width lines the console prints.

**Which test, and why.** Each configuration is compared with the best by a paired t-test (`scipy.stats.ttest_rel`)
over the seeds both have. Pairing by seed removes what a seed shares between configurations (the same initialisation
and data order where the shapes allow), which is often larger than the difference being tested. With the 3 to 10 seeds
a sweep can afford, the rank tests cannot help: Wilcoxon's signed-rank test has 2**n equally likely sign patterns under
the null, so with n = 5 pairs its smallest two-sided p is 2/32 = 0.0625 and it can never reject at 5%; the sign test
is weaker still. The t-test uses the size of each difference, and its one assumption, roughly normal differences
between seeds, is a fair one for accuracies averaged over thousands of validation images.

**Missing values.** A seed whose metric is NaN or infinite (a seed that diverged or failed before it had a value)
is left out of that metric's n, mean, std and interval, and of every pair that needs it; the table counts it in
`<metric>_missing`, and `format_table` flags the configuration, so it never vanishes silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["comparison_table", "format_table", "holm", "mean_interval", "paired_test"]

MODES = ("max", "min")
BEST = "best"
NO_TEST = "n < 2: no test"


def mean_interval(values: Sequence[float], *, confidence: float = 0.95) -> dict[str, float]:
    """n, mean, std (ddof=1) and the Student-t confidence interval of the mean of the finite values.

    n < 2 has no spread, hence no std and no interval (NaN)."""
    x = _finite(values)
    n = len(x)
    row = {"n": n, "mean": float(x.mean()) if n else math.nan, "std": math.nan,
           "ci_low": math.nan, "ci_high": math.nan}
    if n >= 2:
        row["std"] = float(x.std(ddof=1))
        if row["std"] == 0:  # every seed agrees: scipy would warn about the zero variance; the interval is the point
            row["ci_low"] = row["ci_high"] = row["mean"]
        else:
            interval = stats.ttest_1samp(x, 0.0).confidence_interval(confidence_level=confidence)
            row["ci_low"], row["ci_high"] = float(interval.low), float(interval.high)
    return row


def paired_test(values: pd.Series, best: pd.Series) -> dict[str, float]:
    """The paired t-test of `values` against `best`, both indexed by seed, over the seeds where both are finite.

    Returns n_pairs, mean_diff (mean of values - best) and the two-sided p (NaN with fewer than 2 pairs). When every
    difference is the same, the t statistic is 0/0 or x/0: p is 1 if they are all zero (nothing differs) and 0
    otherwise (every seed moved the same way by the same amount), without scipy's warning about the zero variance.
    """
    pairs = pd.concat([values, best], axis=1, join="inner").to_numpy(dtype=float)
    pairs = pairs[np.isfinite(pairs).all(axis=1)]
    diff = pairs[:, 0] - pairs[:, 1]
    n = len(diff)
    if n < 2:
        return {"n_pairs": n, "mean_diff": float(diff.mean()) if n else math.nan, "p_value": math.nan}
    # Equal up to rounding: differences of accuracies carry ~1e-16 of float noise that would make t enormous.
    scale = max(1.0, float(np.abs(pairs).max()))
    if np.ptp(diff) <= 1e-12 * scale:
        p = 1.0 if np.abs(diff).max() <= 1e-12 * scale else 0.0
    else:
        p = float(stats.ttest_rel(pairs[:, 0], pairs[:, 1]).pvalue)
    return {"n_pairs": n, "mean_diff": float(diff.mean()), "p_value": p}


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input's order; NaN entries stay NaN and do not count as tests.

    Sorted ascending, the i-th smallest of m p-values (i from 0) becomes (m - i) * p, made non-decreasing along the
    order and capped at 1. Rejecting where the adjusted p < alpha controls the family-wise error rate at alpha for
    any dependence between the tests, which the comparisons here have: they all share the best configuration.
    (scipy has no Holm; it is a procedure on p-values, not a distribution.)"""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    running = 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[index]))
        adjusted[index] = running
    return adjusted


def comparison_table(seeds: pd.DataFrame, *, metric: str = "best_val_acc", mode: str = "max",
                     metrics: Sequence[str] | None = None, config: str = "config", seed: str = "seed",
                     confidence: float = 0.95, alpha: float = 0.05) -> pd.DataFrame:
    """One row per configuration, best first: for each metric `<m>_n`, `_mean`, `_std`, `_ci_low`, `_ci_high` and
    `_missing`, then the paired comparison with the best by `metric`: n_pairs, mean_diff (this one minus the best),
    p_value, p_holm and verdict.

    `seeds` holds one row per (configuration, seed). `metrics` defaults to `metric` plus `test_acc` when the frame has
    it. The best is the configuration with the best mean of `metric` (the highest for mode "max", the lowest for
    "min"; the first listed on a tie). The verdict is "best", "worse (p = ...)" or "better (p = ...)" when the
    Holm-adjusted p (the p it prints) is below alpha, "indistinguishable from the best at 5%" otherwise, and
    "n < 2: no test" with fewer than two paired seeds. The best's own n_pairs is its n, and its mean_diff 0.
    """
    metrics = list(metrics) if metrics is not None else [metric] + (["test_acc"] if "test_acc" in seeds
                                                                       and metric != "test_acc" else [])
    _check(seeds, metric=metric, mode=mode, metrics=metrics, config=config, seed=seed, confidence=confidence,
           alpha=alpha)
    seeds = seeds.reset_index(drop=True)  # rows are looked up by position below
    values = {m: pd.to_numeric(seeds[m], errors="raise").astype(float) for m in metrics}
    if not np.isfinite(values[metric]).any():
        raise ValueError(f"comparison_table: at least one seed must have a finite {metric!r}, but none has")
    groups = list(seeds.groupby(config, sort=False).groups.items())  # configurations in order of appearance
    rows = []
    for label, index in groups:
        row: dict = {"config": label}
        for m in metrics:
            column = values[m].loc[index]
            summary = mean_interval(column, confidence=confidence)
            row |= {f"{m}_{key}": value for key, value in summary.items()}
            row[f"{m}_missing"] = int(len(column) - summary["n"])
        rows.append(row)
    table = pd.DataFrame(rows)

    means = table[f"{metric}_mean"]
    order = (means if mode == "min" else -means).sort_values(kind="stable", na_position="last").index
    table = table.loc[order].reset_index(drop=True)
    by_seed = {label: values[metric].loc[index].set_axis(seeds.loc[index, seed]) for label, index in groups}

    best = table.config.iloc[0]
    tests = [paired_test(by_seed[label], by_seed[best]) for label in table.config]
    table["n_pairs"] = [t["n_pairs"] for t in tests]
    table["mean_diff"] = [t["mean_diff"] for t in tests]
    table["p_value"] = [math.nan] + [t["p_value"] for t in tests[1:]]  # the best is not tested against itself
    table["p_holm"] = holm(table.p_value)
    table["verdict"] = [_verdict(row, is_best=i == 0, mode=mode, alpha=alpha) for i, row in table.iterrows()]
    return table


def _verdict(row: pd.Series, *, is_best: bool, mode: str, alpha: float) -> str:
    if is_best:
        return BEST
    if row.n_pairs < 2:
        return NO_TEST
    if row.p_holm < alpha:
        worse = row.mean_diff < 0 if mode == "max" else row.mean_diff > 0
        return f"{'worse' if worse else 'better'} (p = {_format_p(row.p_holm)})"
    return f"indistinguishable from the best at {alpha:.0%}"


def _format_p(p: float) -> str:
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def format_table(table: pd.DataFrame, *, width: int = 24) -> str:
    """The comparison table as a few fixed-width lines: configuration, n, mean [CI] per metric, verdict.

    `width` is the configuration column's width; longer labels are cut with "~". A configuration with seeds left out
    for a NaN metric shows n as "4*", explained under the table."""
    metrics = [c[: -len("_ci_low")] for c in table.columns if c.endswith("_ci_low")]
    if not metrics:
        raise ValueError("format_table: the table must have <metric>_ci_low columns, as comparison_table gives")
    first = metrics[0]
    cells = [f"{m} mean [95% CI]" for m in metrics]
    column = max(26, *(len(c) for c in cells))
    lines = [f"{'configuration':<{width}} {'n':>3}  " + "  ".join(f"{c:<{column}}" for c in cells) + "  vs best"]
    flagged = False
    for _, row in table.iterrows():
        label = str(row.config)
        label = label if len(label) <= width else label[: width - 1] + "~"
        missing = any(row[f"{m}_missing"] for m in metrics)
        flagged |= bool(missing)
        n = f"{int(row[f'{first}_n'])}{'*' if missing else ''}"
        parts = [_mean_ci(row, m) for m in metrics]
        lines.append(f"{label:<{width}} {n:>3}  " + "  ".join(f"{p:<{column}}" for p in parts) + f"  {row.verdict}")
    if flagged:
        lines.append("* seeds without a value (diverged or failed) are left out of n, the mean and the tests")
    return "\n".join(lines)


def _mean_ci(row: pd.Series, metric: str) -> str:
    mean, low, high = row[f"{metric}_mean"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
    if not math.isfinite(mean):
        return "-"
    if not math.isfinite(low):
        return f"{mean:.4f}"
    return f"{mean:.4f} [{low:.4f}, {high:.4f}]"


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def _check(seeds: pd.DataFrame, *, metric: str, mode: str, metrics: list[str], config: str, seed: str,
           confidence: float, alpha: float) -> None:
    """One-line errors naming the field and the rule."""
    if mode not in MODES:
        raise ValueError(f"comparison_table: mode must be one of {MODES}, but got {mode!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"comparison_table: `0 < confidence < 1` must hold, but got confidence={confidence}")
    if not 0 < alpha < 1:
        raise ValueError(f"comparison_table: `0 < alpha < 1` must hold, but got alpha={alpha}")
    if metric not in metrics:
        raise ValueError(f"comparison_table: metric {metric!r} must be one of metrics={metrics}")
    for name in [config, seed, *metrics]:
        if name not in seeds.columns:
            raise ValueError(f"comparison_table: column {name!r} must be in the seeds' table, but it has "
                             f"{list(seeds.columns)}")
    if seeds.empty:
        raise ValueError("comparison_table: the seeds' table must have at least one row, but it is empty")
    for name in (config, seed):
        if seeds[name].isna().any():  # a row without its configuration or seed can be neither grouped nor paired
            raise ValueError(f"comparison_table: every row must have a {name!r}, but {int(seeds[name].isna().sum())} "
                             f"have none")
    for name in metrics:
        numbers = pd.to_numeric(seeds[name], errors="coerce")
        bad = seeds[name][numbers.isna() & seeds[name].notna()]
        if len(bad):
            raise ValueError(f"comparison_table: column {name!r} must hold numbers, but has {_plain(bad.iloc[0])!r}")
    twice = seeds.duplicated([config, seed])
    if twice.any():
        label, number = (_plain(v) for v in seeds.loc[twice, [config, seed]].iloc[0])
        raise ValueError(f"comparison_table: each ({config}, {seed}) must appear once, but {config} "
                         f"{label!r} has {seed} {number!r} twice")


def _plain(value):
    """numpy scalars as Python ones, so that messages print 0 rather than np.int64(0)."""
    return value.item() if isinstance(value, np.generic) else value
