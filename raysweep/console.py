"""What the user reads in the terminal at the end of a sweep: the summary.

It shows the best trial by the record's single definition (results.Outcome.best: its label, its best value of the
sweep metric and the epoch it was reached, its test accuracy: the numbers the MLflow sweep run holds), the trials by
status and stop reason, where trials.csv and the report are, and the exact command that opens this sweep's MLflow
store. After Ctrl-C it gives raysweep's one piece of advice: --resume.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysweep.results import RESULTS_CSV

if TYPE_CHECKING:
    import pandas as pd

    from raysweep.mlflow_runs import SweepRun
    from raysweep.results import Outcome


def print_summary(outcome: Outcome, *, seconds: float, resume_command: str | None = None) -> None:
    """Print the summary; `resume_command` is what continues an interrupted sweep (default: the advice in words)."""
    for line in summary_lines(outcome, seconds=seconds, resume_command=resume_command):
        print(line)


def summary_lines(outcome: Outcome, *, seconds: float, resume_command: str | None = None) -> list[str]:
    table = outcome.table
    interrupted = int((table.status == "interrupted").sum()) if len(table) else 0
    lines = ["", f"raysweep: {len(table)} trial(s) in {_duration(seconds)}: {trial_counts(table)}"]
    if outcome.best is not None:
        lines.append(f"best trial: {best_text(outcome.best)}")
    elif not interrupted:  # interrupted before any trial finished: the advice below says what to do
        lines.append("raysweep: no trial succeeded")
    if outcome.comparison:  # a comparison sweep, or repeated seeds: the configurations with error bars
        lines += ["configurations: mean [95% CI] over seeds; each against the best by a paired t-test (Holm):",
                  *(f"  {line}" for line in outcome.comparison.splitlines())]
    lines.append(f"trials: {outcome.results_dir / RESULTS_CSV}")
    lines.append(f"report: {outcome.results_dir / 'report'}/")
    lines.append(f"MLflow: {mlflow_ui_command(outcome.sweep_run)}")
    if interrupted:
        command = resume_command or _resume_command()
        lines.append(f"raysweep: interrupted with {interrupted} trial(s) unfinished: continue them with --resume"
                     + (f": {command}" if command else ""))
    lines += [f"warning: {line}" for line in outcome.missing]
    return lines


def trial_counts(table: pd.DataFrame) -> str:
    """E.g. "12 completed (12 max_epochs), 7 early_stopped (6 asha, 1 patience), 1 diverged"."""
    if not len(table):
        return "none ran"
    parts = []
    for status, rows in table.groupby("status", sort=False):
        part = f"{len(rows)} {status}"
        reasons = rows["stop_reason"].value_counts() if "stop_reason" in rows else None
        if reasons is not None and not (len(reasons) == 1 and reasons.index[0] == status):
            part += " (" + ", ".join(f"{n} {reason}" for reason, n in reasons.items()) + ")"
        parts.append(part)
    return ", ".join(sorted(parts, key=lambda p: -int(p.split()[0])))


def best_text(best: dict[str, Any]) -> str:
    """E.g. "adam lr=0.00555 beta1=0.913 (915279d2): val_acc 0.9375 at epoch 3, test_acc 0.9638"."""
    label = best.get("label")
    who = f"{label} ({best['trial_id']})" if label else str(best["trial_id"])
    # The sweep metric's best value over the trial's epochs is its `best_<metric>` column (trials.csv).
    metric = next((k for k in best if k.startswith("best_") and k not in ("best_epoch", "best_run_id")), None)
    text = who
    if metric is not None and best.get(metric) is not None:
        text += f": {metric.removeprefix('best_')} {best[metric]:.4f}"
        if best.get("best_epoch") is not None:
            text += f" at epoch {int(best['best_epoch'])}"
    if best.get("test_acc") is not None:
        text += f", test_acc {best['test_acc']:.4f}"
    return text


def mlflow_ui_command(sweep_run: SweepRun) -> str:
    """The command that shows this sweep in MLflow's UI, or the page to open when the store is a server."""
    uri = sweep_run.tracking_uri
    if uri.startswith(("http://", "https://")):
        return f"open {uri.rstrip('/')}/#/experiments/{sweep_run.experiment_id}/runs/{sweep_run.run_id}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).absolute())  # works from any folder
    elif "://" not in uri and not uri.startswith("file:"):
        uri = str(Path(uri).absolute())
    return f"{_mlflow_executable()} ui --backend-store-uri {shlex.quote(uri)}"


def _resume_command() -> str | None:
    """This command line with --resume, when this process is the command line (not, e.g., a test calling main)."""
    program = Path(sys.argv[0]).name
    if program not in ("run.py", "raysweep-run"):
        return None
    args = [*sys.argv[1:], *([] if "--resume" in sys.argv else ["--resume"])]
    if program == "raysweep-run":
        return shlex.join([program, *args])
    return shlex.join([_as_typed(Path(sys.executable)), "-m", "raysweep.run", *args])


def _mlflow_executable() -> str:
    """`mlflow` when the shell finds this Python's own, else its path (e.g. .venv/bin/mlflow)."""
    beside = Path(sys.executable).parent / "mlflow"
    if not beside.is_file() or shutil.which("mlflow") == str(beside):
        return "mlflow"
    return _as_typed(beside)


def _as_typed(program: Path) -> str:
    """A program's path as a user types it here: relative below the current folder (.venv/bin/...), else absolute."""
    try:
        return str(program.relative_to(Path.cwd()))
    except ValueError:
        return str(program)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
