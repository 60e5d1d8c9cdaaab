"""The two measures of bench/peers.py, summarised over seeds: same budget and time to quality (issue #12).

Each takes {seed: {contestant: row}}, a row holding at least `wall_s` (spawn to exit), `test_acc` (the best trial's,
on the test split) and `epochs` (trial-epochs trained), and prints means, standard deviations and ranges, the ratios
to raysweep and whether each goal is met. Ratios are printed, never asserted.
"""

from __future__ import annotations

import statistics

GOALS_SAME_BUDGET = {"plain Ray Tune": 2.0, "hyperopt.fmin": 1.8}  # issue #5: their wall time / raysweep's, at least
GOALS_QUALITY = {"plain Ray Tune": 2.0, "hyperopt.fmin": 1.5, "Optuna": 1.2}  # issue #12: time to quality, the same


def quality_times(runs: dict[int, dict[str, dict]], *, within: float) -> dict[str, list[float | None]]:
    """Per contestant, per seed: its wall time if its test accuracy is within `within` of the best any contestant
    reached with that seed, else None (not reached)."""
    times: dict[str, list[float | None]] = {name: [] for name in next(iter(runs.values()))}
    for rows in runs.values():
        bar = max(row["test_acc"] for row in rows.values()) - within
        for name, row in rows.items():
            times[name].append(row["wall_s"] if row["test_acc"] >= bar else None)
    return times


def spread(values: list[float], unit: str = "") -> str:
    """mean +- standard deviation (min-max), over the seeds."""
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4g}{unit} +- {sd:.2g} ({min(values):.4g}-{max(values):.4g})"


def print_same_budget(runs: dict[int, dict[str, dict]]) -> None:
    names = list(next(iter(runs.values())))
    print(f"\nSame budget (no early stopping), over seeds {sorted(runs)}: mean +- sd (min-max)")
    print(f"{'contestant':<16} {'wall s':>28} {'test acc':>32} {'epochs':>7}")
    for name in names:
        print(f"{name:<16} {spread([r[name]['wall_s'] for r in runs.values()]):>28} "
              f"{spread([r[name]['test_acc'] for r in runs.values()]):>32} {runs[min(runs)][name]['epochs']:>7}")
    ours = statistics.mean(r["raysweep"]["wall_s"] for r in runs.values())
    for name in names[1:]:
        ratio = statistics.mean(r[name]["wall_s"] for r in runs.values()) / ours
        goal = GOALS_SAME_BUDGET.get(name)
        print(f"{name} / raysweep mean wall time: {ratio:.2f}x"
              + (f" (issue #5's goal >= {goal}x: {'met' if ratio >= goal else 'MISSED'})" if goal else ""))


def print_time_to_quality(runs: dict[int, dict[str, dict]], *, within: float) -> None:
    names = list(next(iter(runs.values())))
    times = quality_times(runs, within=within)
    print(f"\nTime to quality (each tool's own early stopping; the bar per seed: the best test accuracy any contestant "
          f"reached minus {within}), over seeds {sorted(runs)}: mean +- sd (min-max) over the seeds it was reached")
    print(f"{'contestant':<26} {'reached':>7} {'time to quality s':>28} {'test acc':>32} {'epochs':>12}")
    for name in names:
        reached = [t for t in times[name] if t is not None]
        epochs = statistics.mean(r[name]["epochs"] for r in runs.values())
        print(f"{name:<26} {len(reached):>4}/{len(runs):<2} {spread(reached):>28} "
              f"{spread([r[name]['test_acc'] for r in runs.values()]):>32} {epochs:>12.1f}")
    if None in times["raysweep"]:
        print("raysweep missed the bar on some seed: time to quality goals MISSED")
        return
    ours = statistics.mean(times["raysweep"])
    our_acc = statistics.mean(r["raysweep"]["test_acc"] for r in runs.values())
    for name in names[1:]:
        goal = GOALS_QUALITY.get(name.split(" (")[0])
        acc_gap = our_acc - statistics.mean(r[name]["test_acc"] for r in runs.values())
        if None in times[name]:
            print(f"{name}: missed the bar on {times[name].count(None)} seed(s), raysweep on none; raysweep test acc "
                  f"minus {name}'s: {acc_gap:+.4f}")
            continue
        ratio = statistics.mean(times[name]) / ours
        verdict = "met" if goal and ratio >= goal and acc_gap >= 0 else "MISSED"
        print(f"{name} / raysweep time to quality: {ratio:.2f}x (goal >= {goal}x); raysweep test acc minus {name}'s: "
              f"{acc_gap:+.4f} (goal >= 0): {verdict}")
