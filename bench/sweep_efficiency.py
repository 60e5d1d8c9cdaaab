"""Benchmark (issue #3): how much of a sweep's wall time is the engine's, not the trials'.

    .venv/bin/python bench/sweep_efficiency.py                        # the product as shipped, 3 rounds
    .venv/bin/python bench/sweep_efficiency.py --variants product no-auto-loggers no-mlflow --rounds 3

Each round runs bench/sweeps/efficiency.py (24 trials of equal work, 2 at a time on 1 core each, no early stopping)
once per variant, interleaved (A, B, C, A, B, C, ...), each in its own process that calls `raysweep.run.main` with
`--tracking-uri sqlite:///<tmp>/mlflow.db --storage <tmp>`, exactly as the command line does. The process times
Tuner.fit and wraps the trainable to timestamp, per trial, its entry, each epoch's start, each epoch's end (the
metrics ready) and the return from that epoch's checkpoint + tune.report, all by the one machine clock.

Efficiency = wall time of Tuner.fit / (sum of trial times / 2), for two meanings of trial time:
  - Tune's: the trial's time_total_s (trials.csv wall_time_s), which includes each epoch's checkpoint and report;
  - compute: the trial's epochs alone (train_epoch + evaluate), what a trial costs without any engine.
Variants (experiments, not product changes): no-auto-loggers sets TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1 (no Tune
JSON/CSV/TensorBoard files per trial); no-mlflow replaces the MLflow trial callback with nothing (its cost on the
driver); rare-snapshots sets TUNE_GLOBAL_CHECKPOINT_S=600 (Tune's experiment state saved every 10 minutes instead
of "auto"); nice0 sets RAY_worker_niceness=0 (Ray starts trial workers at nice 15, so on a busy machine every
nice-0 process, the driver included, runs first). Ratios are printed, never asserted.
"""

from __future__ import annotations

import argparse
import glob
import heapq
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ray.tune import Callback

REPO = Path(__file__).resolve().parents[1]
SWEEP_FILE = REPO / "bench" / "sweeps" / "efficiency.py"
CONCURRENCY = 2  # the sweep's max_concurrent, and the cores
GOAL = 1.10
VARIANTS = {  # name -> extra environment of the sweep process
    "product": {},
    "no-auto-loggers": {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"},
    "no-mlflow": {"BENCH_NO_MLFLOW": "1"},
    "rare-snapshots": {"TUNE_GLOBAL_CHECKPOINT_S": "600"},  # experiment state saved every 10 min, not "auto"
    "nice0": {"RAY_worker_niceness": "0"},  # Ray starts workers at nice 15: starved by any busy nice-0 process
}
LOG_DIR = ""  # set in the sweep process before the trainable is pickled; workers write one JSON per trial here


# ------------------------------------------------------------------------------------- in the sweep process
def timed_trainable(config: dict, *, data: object, repeats: int = 1) -> None:
    """raysweep's trainable, timestamped: entry, epoch starts, epoch ends and report returns, exit (unix seconds)."""
    from ray import tune

    from raysweep import train, trainable

    if not hasattr(train, "bench_record"):  # once per worker process: reused workers keep their hooks
        run_trial, train_epoch = train.run_trial, train.train_epoch

        def timed_train_epoch(*args: object, **kwargs: object) -> dict:
            train.bench_record["epoch_starts"].append(time.time())
            return train_epoch(*args, **kwargs)

        def timed_run_trial(*args: object, **kwargs: object):  # noqa: ANN202 (a generator, like run_trial)
            for item in run_trial(*args, **kwargs):
                train.bench_record["epoch_ends"].append(time.time())
                yield item  # the trainable now saves the checkpoint and calls tune.report
                train.bench_record["reported"].append(time.time())

        train.train_epoch, trainable.run_trial = timed_train_epoch, timed_run_trial
    record = {"trial_id": tune.get_context().get_trial_id(), "pid": os.getpid(), "entry": time.time(),
              "epoch_starts": [], "epoch_ends": [], "reported": []}
    train.bench_record = record
    try:
        trainable.trainable(config, data=data, repeats=repeats)
    finally:
        record["exit"] = time.time()
        Path(LOG_DIR, f"{record['trial_id']}.json").write_text(json.dumps(record))


def phase_functions() -> list[tuple[object, str]]:
    """raysweep.run.main's phases, as (owner, function name), each timed in the sweep process."""
    from ray import tune

    from raysweep import data, mlflow_runs, results, run, tracking

    return [(mlflow_runs, "check_reachable"), (data, "load"), (run, "connect"), (tracking, "start_sweep_run"),
            (tune.Tuner, "fit"), (results, "finish")]


def sweep_process(workdir: Path, extra_args: list[str]) -> None:
    """Run the sweep as `python -m raysweep.run` would, with its phases timed and the trainable wrapped."""
    global LOG_DIR
    phases = {"main": [time.time()]}  # name -> [start, end], unix seconds
    from raysweep import run, trainable

    LOG_DIR = str(workdir / "trials")
    Path(LOG_DIR).mkdir(parents=True)
    for owner, name in phase_functions():
        setattr(owner, name, timed_stage(getattr(owner, name), phases, name))
    trainable.trainable = timed_trainable  # run.run looks it up at call time; workers import the original
    if os.environ.get("BENCH_NO_MLFLOW"):
        from raysweep import tracking_callback

        tracking_callback.MlflowTrialCallback = NoCallback
    try:
        code = run.main([str(SWEEP_FILE), "--tracking-uri", f"sqlite:///{workdir}/mlflow.db",
                         "--storage", str(workdir / "storage"), *extra_args])
    finally:
        phases["main"].append(time.time())
        (workdir / "phases.json").write_text(json.dumps(phases))
    raise SystemExit(code)


class NoCallback(Callback):
    """Stands in for MlflowTrialCallback in the no-mlflow variant: logs nothing."""

    def __init__(self, **_: object) -> None:
        self.missing: list[str] = []


def timed_stage(function, phases: dict, name: str):  # noqa: ANN001, ANN202
    """`function`, recording into phases[name] the [start, end] of its last call (unix seconds)."""
    def timed(*args: object, **kwargs: object) -> object:
        start = time.time()
        try:
            return function(*args, **kwargs)
        finally:
            phases[name] = [start, time.time()]

    return timed


# ---------------------------------------------------------------------------------------------- the driver
def run_variant(name: str, workdir: Path, extra_args: list[str]) -> dict:
    """One sweep in its own process; the whole command's wall time and what the process recorded."""
    env = {**os.environ, **VARIANTS[name], "PYTHONPATH": str(REPO)}
    started = time.time()
    done = subprocess.run([sys.executable, __file__, "--sweep-process", str(workdir), "--", *extra_args], env=env,
                          capture_output=True, text=True)
    ended = time.time()
    # Exit 1 ("no trial succeeded") is what the product says when Tune's per-trial result files are missing.
    if done.returncode not in (0, 1) or not (workdir / "phases.json").is_file():
        raise SystemExit(f"{name}: the sweep exited {done.returncode}:\n{done.stderr[-3000:]}")
    return {**analyse(workdir, started=started, ended=ended), "exit_code": done.returncode}


def analyse(workdir: Path, *, started: float, ended: float) -> dict:
    import pandas as pd

    phases = json.loads((workdir / "phases.json").read_text())
    fit = dict(zip(("start", "end"), phases["fit"], strict=True))
    trials = [json.loads(p.read_text()) for p in sorted((workdir / "trials").glob("*.json"))]
    table = pd.read_csv(glob.glob(str(workdir / "storage" / "*" / "*" / "trials.csv"))[0])
    wall = fit["end"] - fit["start"]
    tune_sum = table.wall_time_s.sum()
    compute = [sum(e - s for s, e in zip(t["epoch_starts"], t["epoch_ends"], strict=True)) for t in trials]
    reporting = [sum(r - e for e, r in zip(t["epoch_ends"], t["reported"], strict=False)) for t in trials]
    by_entry = sorted(trials, key=lambda t: t["entry"])
    setup = [t["epoch_starts"][0] - t["entry"] for t in by_entry]  # the first CONCURRENCY run in new workers
    # Start-up gap: from the moment a slot is free (Tuner.fit start, or a trial's exit) to the next trial's entry.
    slots, gaps = [fit["start"]] * CONCURRENCY, []
    for t in by_entry:
        gaps.append(t["entry"] - heapq.heappop(slots))
        heapq.heappush(slots, t["exit"])
    spans = {name: end - start for name, (start, end) in phases.items()}
    return {
        "trials": len(trials), "epochs": int(table.epochs.sum()), "command_s": ended - started, "fit_s": wall,
        "python_s": phases["main"][0] - started, "exit_s": ended - phases["main"][1],
        **{f"{name}_s": span for name, span in spans.items() if name not in ("main", "fit")},
        "main_other_s": spans["main"] - sum(span for name, span in spans.items() if name != "main"),
        "tune_trial_s": tune_sum / len(table), "compute_s": statistics.mean(compute),
        "efficiency_tune": wall / (tune_sum / CONCURRENCY),
        "efficiency_compute": wall / (sum(compute) / CONCURRENCY),
        "first_gap_s": statistics.mean(gaps[:CONCURRENCY]),  # cold start: new worker processes
        "later_gap_s": _mean(gaps[CONCURRENCY:]), "setup_cold_s": _mean(setup[:CONCURRENCY]),
        "setup_warm_s": _mean(setup[CONCURRENCY:]),
        "report_s": statistics.mean(reporting), "report_epoch_s": sum(reporting) / int(table.epochs.sum()),
        "tail_s": fit["end"] - max(t["exit"] for t in trials),
        "excess_per_trial_s": (wall - sum(compute) / CONCURRENCY) * CONCURRENCY / len(trials),
        "workers": len({t["pid"] for t in trials}),
    }


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")  # nan: no trial ran in a reused worker


ROWS = [  # key, label, format
    ("command_s", "whole command (s)", "{:.1f}"),
    ("python_s", "  python start, imports (s)", "{:.1f}"),
    ("check_reachable_s", "  MLflow reachable? (s)", "{:.1f}"),
    ("load_s", "  data.load (s)", "{:.1f}"),
    ("connect_s", "  ray.init + resource check (s)", "{:.1f}"),
    ("start_sweep_run_s", "  MLflow parent run (s)", "{:.1f}"),
    ("fit_s", "  Tuner.fit (s)", "{:.1f}"),
    ("finish_s", "  test evaluation, CSV, MLflow report (s)", "{:.1f}"),
    ("main_other_s", "  rest of main (s)", "{:.1f}"),
    ("exit_s", "  exit: Ray shutdown, interpreter (s)", "{:.1f}"),
    ("tune_trial_s", "trial time, Tune's time_total_s, mean (s)", "{:.2f}"),
    ("compute_s", "trial time, epochs alone, mean (s)", "{:.2f}"),
    ("efficiency_tune", f"efficiency vs Tune's trial times (goal <= {GOAL})", "{:.3f}"),
    ("efficiency_compute", "efficiency vs epochs alone", "{:.3f}"),
    ("excess_per_trial_s", "wall - ideal, per trial (x2 slots) (s)", "{:.2f}"),
    ("first_gap_s", "start-up: fit start -> first 2 trials enter (s)", "{:.2f}"),
    ("later_gap_s", "start-up: slot free -> next trial enters (s)", "{:.2f}"),
    ("setup_cold_s", "in trial: entry -> first epoch, new worker (s)", "{:.2f}"),
    ("setup_warm_s", "in trial: entry -> first epoch, reused worker (s)", "{:.2f}"),
    ("report_s", "in trial: checkpoint + tune.report, all epochs (s)", "{:.2f}"),
    ("report_epoch_s", "  per epoch (s)", "{:.3f}"),
    ("tail_s", "last trial exits -> fit returns (s)", "{:.2f}"),
    ("workers", "worker processes used", "{:.0f}"),
    ("exit_code", "exit code of the sweep", "{:.0f}"),
]


def main() -> None:
    if "--sweep-process" in sys.argv:
        at = sys.argv.index("--sweep-process")
        extra = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
        sweep_process(Path(sys.argv[at + 1]), extra)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["product"], choices=sorted(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to raysweep.run, e.g. --set max_epochs=4")
    args = parser.parse_args()
    extra = [arg for override in args.overrides for arg in ("--set", override)]

    import ray
    import torch

    print(f"ray {ray.__version__}, torch {torch.__version__}, {os.cpu_count()} cores; sweep {SWEEP_FILE.name} "
          f"{' '.join(extra)}")
    print("start: load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    results: dict[str, list[dict]] = {name: [] for name in args.variants}
    with tempfile.TemporaryDirectory(prefix="raysweep-eff-") as tmp:
        for round_ in range(args.rounds):
            for name in args.variants:
                result = run_variant(name, Path(tmp, f"{name}-{round_}"), extra)
                results[name].append(result)
                print(f"  round {round_ + 1} {name}: fit {result['fit_s']:.1f} s, efficiency "
                      f"{result['efficiency_tune']:.3f} (Tune) {result['efficiency_compute']:.3f} (compute), load "
                      "{:.2f}".format(os.getloadavg()[0]), flush=True)
    print(f"\nmedians over {args.rounds} rounds; {results[args.variants[0]][0]['trials']} trials each")
    print(f"{'':52s}" + "".join(f"{name:>18s}" for name in args.variants))
    for key, label, fmt in ROWS:
        cells = "".join(f"{fmt.format(statistics.median(r[key] for r in results[n])):>18s}" for n in args.variants)
        print(f"{label:52s}{cells}")
    best = statistics.median(r["efficiency_tune"] for r in results[args.variants[0]])
    print(f"\n{args.variants[0]}: efficiency {best:.3f}, goal <= {GOAL}: {'MET' if best <= GOAL else 'NOT MET'}")
    print("end: load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
