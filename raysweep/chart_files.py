"""The report's charts written as PNG files, drawn by several processes at once when there are many.

Drawing is most of the work after a sweep (about 0.15-0.3 s of one core per chart, one convergence chart per trial),
and matplotlib draws in one thread, so `write_charts` hands part of the charts to child processes
(`python -m raysweep.chart_files`, told on stdin which file holds its share), each drawing its share while this
process draws its own. Every chart is the same file whoever draws it.

A child's start-up (Python, pandas, matplotlib: about 1 s) need not wait for the charts: `start_helpers` starts them
early (run.py, as soon as fit returns) and the next `write_charts` hands them their shares.
"""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from raysweep import charts

# Below this many charts per process a child's start-up (Python, pandas, matplotlib: about 2 s) costs more than the
# share of drawing it takes over.
CHARTS_PER_PROCESS = 8

# One chart to draw: (the name of its function in raysweep.charts, its keyword arguments, its file).
Job = tuple[str, dict[str, Any], Path]

_helpers: list[subprocess.Popen] = []  # started by start_helpers, waiting for their share of the next write_charts


def start_helpers(count: int | None = None) -> None:
    """Start `count` drawing processes now (default: one per core beside this process) for the next write_charts.

    Each imports what drawing needs and then waits for its share; one that is not needed exits when write_charts
    releases it, or when this process ends."""
    release_helpers()
    count = (os.cpu_count() or 1) - 1 if count is None else count
    _helpers.extend(_start_helper() for _ in range(count))


def release_helpers() -> None:
    """Let every waiting helper exit without drawing (not waited for: it may still be importing)."""
    while _helpers:
        _helpers.pop().stdin.close()  # it reads no share and exits 0


def write_charts(summary: pd.DataFrame, history: pd.DataFrame, *, params: pd.DataFrame, out_dir: Path,
                 processes: int | None = None) -> list[Path]:
    """Every chart as a PNG under `out_dir` (per-trial convergence plots in convergence/); returns the paths.

    `params` holds the searched params, one column each, one row per trial: each gets a chart against val_acc.
    `processes` caps how many processes draw (default: one per core, one per CHARTS_PER_PROCESS charts)."""
    out_dir = Path(out_dir)
    (out_dir / "convergence").mkdir(parents=True, exist_ok=True)
    jobs = chart_jobs(summary, history, params=params, out_dir=out_dir)
    if processes is None:
        processes = min(os.cpu_count() or 1, math.ceil(len(jobs) / CHARTS_PER_PROCESS))
    processes = max(processes, 1)
    shares = [jobs[i::processes] for i in range(processes)]  # round robin: mixed chart sizes in each share
    with tempfile.TemporaryDirectory() as folder:
        children = [_start_child(share, Path(folder) / f"jobs-{i}.pkl") for i, share in enumerate(shares[1:])]
        release_helpers()  # more were started than there are shares
        try:
            draw(shares[0])
            for child in children:
                _, stderr = child.communicate()
                if child.returncode != 0:
                    lines = stderr.strip().splitlines() or [f"exit {child.returncode}"]
                    raise RuntimeError(f"a chart-drawing process failed: {lines[-1]}")
        finally:
            for child in children:  # after a failure here: none is left drawing into a folder that is going away
                if child.poll() is None:
                    child.kill()
                    child.wait()
    return [path for _, _, path in jobs]


def chart_jobs(summary: pd.DataFrame, history: pd.DataFrame, *, params: pd.DataFrame, out_dir: Path) -> list[Job]:
    """The report's charts in their order: the three bar charts, the learning curves, one convergence chart per trial,
    and final accuracy against each searched parameter."""
    jobs: list[Job] = [
        ("bar_chart", {"summary": summary, "column": "wall_time_s", "title": "Training time per trial",
                       "xlabel": "wall time (s, sum of epoch times)"}, out_dir / "training_time.png"),
        ("bar_chart", {"summary": summary, "column": "final_val_loss", "xlabel": "val_loss at last epoch",
                       "title": "Final validation loss per trial (lower is better)"}, out_dir / "final_val_loss.png"),
        ("bar_chart", {"summary": summary, "column": "final_val_acc", "xlabel": "val_acc at last epoch",
                       "title": "Final validation accuracy per trial (higher is better)"},
         out_dir / "final_val_acc.png"),
        ("learning_curves", {"summary": summary, "history": history}, out_dir / "learning_curves.png"),
    ]
    for run_id, name in zip(summary.run_id, file_names(list(summary.label)), strict=True):
        jobs.append(("convergence", {"summary": summary, "history": history, "run_id": run_id},
                     out_dir / "convergence" / f"{name}.png"))
    for name in params.columns:
        jobs.append(("accuracy_versus", {"summary": summary, "values": params[name]},
                     out_dir / f"final_val_acc_vs_{charts.safe_name(str(name))}.png"))
    return jobs


def file_names(labels: list[str]) -> list[str]:
    """One file name per label, unique even where two labels sanitize alike ("a b" and "a_b")."""
    names: list[str] = []
    for i, label in enumerate(labels):
        name = charts.safe_name(label)
        names.append(name if name not in names else f"{name}_{i}")
    return names


def draw(jobs: list[Job]) -> None:
    """Draw and save each chart of `jobs`, in this process."""
    for function, kwargs, path in jobs:
        getattr(charts, function)(**kwargs).savefig(path, dpi=100)


def _start_child(jobs: list[Job], jobs_file: Path) -> subprocess.Popen:
    """A process drawing `jobs`, handed over in a pickle file that this process wrote: a waiting helper, else a new
    one."""
    jobs_file.write_bytes(pickle.dumps(jobs))
    child = _helpers.pop(0) if _helpers else _start_helper()
    child.stdin.write(f"{jobs_file}\n")
    child.stdin.flush()
    return child


def _start_helper() -> subprocess.Popen:
    """A drawing process that sees this one's sys.path and waits on stdin for the file of its share."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.Popen([sys.executable, "-m", "raysweep.chart_files"], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


if __name__ == "__main__":
    if jobs_path := sys.stdin.readline().strip():  # a file written by _start_child; nothing: released unused
        draw(pickle.loads(Path(jobs_path).read_bytes()))
