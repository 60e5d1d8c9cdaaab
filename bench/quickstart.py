"""Issue #12's fixed-cost goal, side by side: the quickstart command as a whole process against the same search as a
lean single-process Optuna script (bench/quickstart_optuna.py), alternating, each in a fresh folder.

    .venv/bin/python bench/quickstart.py --rounds 3            # the goal: raysweep / optuna <= 2.0
    .venv/bin/python bench/quickstart.py --rounds 3 --optuna-threads 1

Prints every wall time (from the process's start to its exit, as a user waits) and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(command: list[str], *, env: dict[str, str]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[2]} failed with exit {done.returncode}: {done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--optuna-threads", type=int, default=None,
                        help="torch threads of the Optuna script (default: torch's own, every core)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    optuna_env = dict(env)
    if args.optuna_threads:
        optuna_env |= {"OMP_NUM_THREADS": str(args.optuna_threads), "MKL_NUM_THREADS": str(args.optuna_threads)}
    ours, theirs = [], []
    for round_ in range(1, args.rounds + 1):
        ours.append(timed([sys.executable, "-m", "raysweep.run", str(REPO / "sweeps" / "quickstart.py")], env=env))
        theirs.append(timed([sys.executable, str(REPO / "bench" / "quickstart_optuna.py")], env=optuna_env))
        print(f"round {round_}: raysweep {ours[-1]:.1f} s, optuna {theirs[-1]:.1f} s", flush=True)
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"median: raysweep {statistics.median(ours):.1f} s, optuna {statistics.median(theirs):.1f} s; "
          f"raysweep / optuna = {ratio:.2f} (goal <= 2.0: {'met' if ratio <= 2.0 else 'NOT met'}); "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
