"""Where the quickstart's wall time goes, phase by phase, for this checkout and optionally an older one, side by side.

    git worktree add /tmp/raysweep-before 4118e66            # e.g. the code before issue #12's fixed-cost work
    .venv/bin/python bench/quickstart_phases.py --rounds 3 --before /tmp/raysweep-before

Each round runs `python -m raysweep.run sweeps/quickstart.py` once per checkout (alternating, each in a fresh folder),
with the command's stages timed from inside the process (wrapped, not changed) and the whole process timed from
outside. Prints the median of each phase in seconds. The stages are the same functions in both checkouts; a phase
a checkout overlaps with another (the MLflow store opened while Ray starts) shows where it ends up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# (phase, the mark it starts at, the mark it ends at); marks are "<stage> start" / "<stage> end" of wrapped stages.
PHASES = [
    ("python, imports, sweep file", "process", "preflight start"),
    ("preflight checks", "preflight start", "preflight end"),
    ("Ray start (+ MLflow store, overlapped)", "connect start", "connect end"),
    ("MLflow sweep run", "start_sweep_run start", "start_sweep_run end"),
    ("Tuner.fit: the 20 trials", "fit start", "fit end"),
    ("test split, best trial", "test_eval start", "test_eval end"),
    ("best model logged to MLflow", "log_best start", "log_best end"),
    ("comparison, importance", "comparison start", "comparison end"),
    ("report: read back from MLflow", "report.collect start", "report.collect end"),
    ("report: charts", "report.write start", "report.write end"),
    ("after main() until the process ends", "main end", "exit"),
]


def child() -> None:
    """In the timed process: wrap the stages, run the command as its entry point does, print the marks."""
    import ray.tune
    from sweep_efficiency import timed_stage  # beside this script: its folder is first on sys.path

    from raysweep import comparison, preflight, report, results, run, tracking

    phases: dict[str, list[float]] = {}  # stage -> [start, end], wall-clock times the parent's clock shares
    for module, name, stage in [(preflight, "check", "preflight"), (run, "connect", "connect"),
                                (tracking, "start_sweep_run", "start_sweep_run"), (ray.tune.Tuner, "fit", "fit"),
                                (results, "evaluate_on_test", "test_eval"), (results, "_log_best", "log_best"),
                                (comparison, "write", "comparison"), (report, "collect", "report.collect"),
                                (report, "write_report", "report.write")]:
        if hasattr(module, name):  # a checkout without this stage leaves its phase out
            setattr(module, name, timed_stage(getattr(module, name), phases, stage))
    code = run.main([str(REPO / "sweeps" / "quickstart.py")])
    marks = {f"{stage} {edge}": t for stage, (start, end) in phases.items()
             for edge, t in (("start", start), ("end", end))}
    print("MARKS " + json.dumps(marks | {"main end": time.time()}), file=sys.stderr, flush=True)
    if hasattr(run, "cli"):  # the checkout's own way out of the process, after main()
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


def timed_round(code_dir: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "PYTHONPATH": str(code_dir)}
        started = time.time()
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child"], cwd=folder, env=env,
                              capture_output=True, text=True)
        ended = time.time()
    if done.returncode != 0:
        raise SystemExit(f"{code_dir}: exit {done.returncode}: {done.stderr[-2000:]}")
    line = next(line for line in done.stderr.splitlines() if line.startswith("MARKS "))
    marks = json.loads(line.removeprefix("MARKS ")) | {"process": started, "exit": ended}
    return {name: marks[end] - marks[start] for name, start, end in PHASES if start in marks and end in marks} | {
        "whole process": ended - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="an older checkout of raysweep, timed alternately with this one")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
    checkouts = {"this checkout": REPO} | ({"before": args.before} if args.before else {})
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    for round_ in range(1, args.rounds + 1):
        for name, code_dir in checkouts.items():
            rounds[name].append(timed_round(code_dir))
            print(f"round {round_}, {name}: {rounds[name][-1]['whole process']:.1f} s", flush=True)
    names = list(checkouts)[::-1]
    print(f"\n| phase (median s) | {' | '.join(names)} |\n| --- |{' --- |' * len(names)}")
    for phase in [p for p, _, _ in PHASES] + ["whole process"]:
        cells = [statistics.median(r[phase] for r in rounds[n]) if all(phase in r for r in rounds[n]) else None
                 for n in names]
        print(f"| {phase} | " + " | ".join("-" if c is None else f"{c:.1f}" for c in cells) + " |")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
