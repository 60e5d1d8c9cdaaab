"""What the user reads in the terminal: the summary at the end of a sweep."""

from __future__ import annotations

from typing import TYPE_CHECKING

from raysweep.results import RESULTS_CSV

if TYPE_CHECKING:
    from raysweep.results import Outcome


def print_summary(outcome: Outcome, *, seconds: float) -> None:
    table = outcome.table
    counts = table.status.value_counts().to_dict() if len(table) else {}
    print(f"\nraysweep: {len(table)} trial(s) in {seconds:.0f} s: "
          + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    if outcome.best is None:
        print("raysweep: no trial succeeded")
    else:
        best = outcome.best
        print(f"best trial {best['trial_id']}: val_acc={best['val_acc']:.4f} test_acc={best['test_acc']:.4f} "
              f"after {best['epochs']} epoch(s)")
        print("  config: " + ", ".join(f"{k}={v}" for k, v in best["config"].items()))
    print(f"results: {outcome.results_dir / RESULTS_CSV} and {outcome.results_dir / 'report'}/")
    run = outcome.sweep_run
    print(f"MLflow: {run.tracking_uri} experiment id {run.experiment_id}, sweep run {run.run_id}")
    if counts.get("interrupted"):
        print(f"raysweep: interrupted with {counts['interrupted']} trial(s) unfinished: continue them with --resume")
    for line in outcome.missing:
        print(f"warning: {line}")

