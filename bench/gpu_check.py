"""GPU check (issue #12, section 5): do trials train on CUDA, and how well do GPU shares pack trials onto a GPU?

    .venv/bin/python bench/gpu_check.py                 # on a CUDA machine, after `make install` (not yet run on one)
    .venv/bin/python bench/gpu_check.py --address auto  # on a cluster's head (e.g. `ray up cluster.yaml`)

Runs the quickstart sweep and a shortened CIFAR-10 sweep (sweeps/cifar_elastic.py: 8 trials x 2 epochs, no ASHA, so
every setting trains the same budget) with gpu=1, 0.5 and 0.25 per trial, each as `python -m raysweep.run` in its own
process. From the trials' result.json in each run's Tune storage it then:
  - asserts every epoch of every trial trained on CUDA (the trainable reports `device`);
  - prints how many trials overlapped on the GPU (most at once, and on average while any ran, from the results'
    timestamps), trial-epochs per hour for each setting and their ratio to gpu=1, and the peak GPU memory per trial
    (the trainable reports `gpu_mem_peak_mb`, torch.cuda.max_memory_allocated).
Without CUDA (and without --address) it says so in one line and exits 0. Exit 1 if a check fails, with the reason.
The CIFAR-10 files are read from --data-dir (default: raysweep's, where they are downloaded when the network allows).
tests/test_gpu_check.py runs it on the CPU against a Ray head started with fake GPUs (`--allow-cpu`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEPS = {  # name -> (sweep file, options that shorten it)
    "quickstart": (REPO / "sweeps" / "quickstart.py", []),
    # No ASHA: every setting trains the same 16 trial-epochs, so throughputs compare like for like.
    "cifar_elastic": (REPO / "sweeps" / "cifar_elastic.py",
                      ["--num-samples", "8", "--max-epochs", "2", "--set", "scheduler=none"]),
}
SETTINGS = (1.0, 0.5, 0.25)  # GPU per trial


# ---------------------------------------------------------------------------------------- reading the results
def read_trials(storage: Path) -> dict[str, list[dict]]:
    """Per trial id: its results (one per epoch) from every result.json under a sweep's Tune storage folder."""
    trials: dict[str, list[dict]] = {}
    for path in sorted(storage.glob("*/*/trainable_*/result.json")):
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut short by a killed writer
                result = json.loads(line)
                trials.setdefault(result["trial_id"], []).append(result)
    return trials


TIMESTAMP_RESOLUTION_S = 1.0  # Tune's result `timestamp` is int(time.time())


def spans(trials: dict[str, list[dict]]) -> list[tuple[float, float]]:
    """(start, end) in seconds since the epoch of each trial's training: its last result's timestamp, minus the
    training time Tune counted up to it."""
    return [(r[-1]["timestamp"] - r[-1]["time_total_s"], r[-1]["timestamp"]) for r in trials.values() if r]


def most_at_once(intervals: list[tuple[float, float]], *, resolution: float = TIMESTAMP_RESOLUTION_S) -> int:
    """The largest number of intervals that hold one instant (a start counts, an end does not), counting an overlap
    only when it lasts longer than `resolution`.

    The timestamps are whole seconds, so both ends of a span may be early by up to a second, by a different amount
    for each trial: two trials one after the other can seem to overlap by less than a second. Trials that share a
    GPU overlap by whole epochs. A trial shorter than `resolution` still counts for itself."""
    at_once = (sum(start <= t < end - resolution for start, end in intervals) for t, _ in intervals)
    return max(at_once, default=0) or min(len(intervals), 1)


def mean_at_once(intervals: list[tuple[float, float]]) -> float:
    """How many intervals held on average over the time when at least one did."""
    busy, last_end = 0.0, -math.inf
    for start, end in sorted(intervals):  # the length of the union of the intervals
        if end > last_end:
            busy += end - max(start, last_end)
            last_end = end
    return sum(end - start for start, end in intervals) / busy if busy > 0 else 0.0


def device_problems(trials: dict[str, list[dict]], *, expect: str = "cuda") -> list[str]:
    """One line per trial that did not train every epoch on `expect`."""
    problems = []
    for trial_id, results in sorted(trials.items()):
        devices = [r.get("device") for r in results]
        if None in devices:
            problems.append(f"trial {trial_id}: results carry no `device` key (a raysweep older than this check)")
        elif set(devices) != {expect}:
            problems.append(f"trial {trial_id}: trained on {sorted(set(devices))}, not only {expect}")
    return problems


def summarize(trials: dict[str, list[dict]]) -> dict:
    """Trials, trial-epochs, the span of training (first start to last end), trial-epochs per hour over it, the
    overlap, and the largest and median peak GPU memory per trial (None where the trainable reported none)."""
    intervals = spans(trials)
    span_s = max(end for _, end in intervals) - min(start for start, _ in intervals) if intervals else 0.0
    epochs = sum(len(results) for results in trials.values())
    peaks = [max(m) for m in ([r["gpu_mem_peak_mb"] for r in rs if r.get("gpu_mem_peak_mb") is not None]
                              for rs in trials.values()) if m]
    return {"trials": len(trials), "epochs": epochs, "span_s": span_s,
            "epochs_per_hour": epochs / span_s * 3600 if span_s > 0 else 0.0,
            "most_at_once": most_at_once(intervals), "mean_at_once": mean_at_once(intervals),
            "peak_mem_mb_max": max(peaks) if peaks else None,
            "peak_mem_mb_median": statistics.median(peaks) if peaks else None}


def report(rows: dict[tuple[str, float], dict]) -> str:
    """The table: one row per (sweep, gpu share), throughput as a ratio to the same sweep at gpu=1 (or its first)."""
    lines = [f"{'sweep':<14} {'gpu':>5} {'trials':>6} {'epochs':>6} {'wall s':>7} {'train s':>8} {'most at once':>12} "
             f"{'mean at once':>12} {'epochs/h':>9} {'ratio':>6} {'peak MB (max, median)':>22}"]
    for sweep in dict.fromkeys(name for name, _ in rows):
        ours = {gpu: row for (name, gpu), row in rows.items() if name == sweep}
        base = ours.get(1.0) or next(iter(ours.values()))
        for gpu, row in ours.items():
            ratio = row["epochs_per_hour"] / base["epochs_per_hour"] if base["epochs_per_hour"] else float("nan")
            memory = ("n/a" if row["peak_mem_mb_max"] is None
                      else f"{row['peak_mem_mb_max']:.0f}, {row['peak_mem_mb_median']:.0f}")
            lines.append(f"{sweep:<14} {gpu:>5g} {row['trials']:>6} {row['epochs']:>6} {row.get('wall_s', 0):>7.0f} "
                         f"{row['span_s']:>8.0f} {row['most_at_once']:>12} {row['mean_at_once']:>12.2f} "
                         f"{row['epochs_per_hour']:>9.0f} {ratio:>5.2f}x {memory:>22}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- running
def cuda_line() -> str | None:
    """None when torch sees a CUDA device; otherwise the one line that says why not."""
    import torch

    if torch.cuda.is_available():
        return None
    built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return f"bench/gpu_check.py: no CUDA device on this machine (torch {torch.__version__}, {built}); nothing to check"


def gpus_available(address: str | None) -> float:
    """GPUs one sweep can pack trials onto: this machine's, or on a cluster the most GPUs of one node, running or
    that its autoscaler can start (raysweep.resources, as the sweep itself sees it)."""
    if address is None:
        import torch

        return float(torch.cuda.device_count())
    import ray

    from raysweep import resources

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        return resources.cluster_capacity().gpu
    finally:
        ray.shutdown()


def run_sweep(name: str, gpu: float, *, args: argparse.Namespace, tmp: Path, concurrent: int) -> dict:
    """One sweep at one GPU share, in its own process; its summary, with its wall time from spawn to exit."""
    sweep_file, shorten = SWEEPS[name]
    folder = tmp / f"{name}_gpu{gpu:g}"
    budget = [*(["--num-samples", str(args.num_samples)] if args.num_samples else []),
              *(["--max-epochs", str(args.max_epochs)] if args.max_epochs else [])]
    command = [sys.executable, "-m", "raysweep.run", str(sweep_file), *shorten, *budget,
               "--set", f"gpu={gpu:g}", "--set", f"max_concurrent={concurrent}",  # all packed trials at once
               *[item for setting in args.set for item in ("--set", setting)],
               "--storage", str(folder / "results"), "--tracking-uri", f"sqlite:///{folder}/mlflow.db",
               *(["--data-dir", args.data_dir] if args.data_dir else []),
               *(["--address", args.address] if args.address else [])]
    folder.mkdir(parents=True)
    print(f"[{name} gpu={gpu:g}] $ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    with open(folder / "run.log", "w") as log:
        code = subprocess.run(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT).returncode
    wall_s = time.perf_counter() - started
    if code != 0:
        tail = "\n".join((folder / "run.log").read_text().splitlines()[-20:])
        raise SystemExit(f"bench/gpu_check.py: {name} at gpu={gpu:g} exited with {code}; the end of its log:\n{tail}")
    trials = read_trials(folder / "results")
    problems = [] if args.allow_cpu else device_problems(trials)
    if problems:
        raise SystemExit(f"bench/gpu_check.py: {name} at gpu={gpu:g}: not every trial trained on CUDA: "
                         + "; ".join(problems))
    row = {**summarize(trials), "wall_s": wall_s}
    print(f"[{name} gpu={gpu:g}] {json.dumps(row)}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="a Ray cluster to run on (default: a local Ray on this machine)")
    parser.add_argument("--data-dir", help="where CIFAR-10 is (default: raysweep's, downloaded if the network allows)")
    parser.add_argument("--sweeps", default=",".join(SWEEPS), help="comma-separated, of: " + ", ".join(SWEEPS))
    parser.add_argument("--settings", default=",".join(f"{g:g}" for g in SETTINGS), help="GPU shares per trial")
    parser.add_argument("--num-samples", type=int, help="trials per sweep (default: each sweep's own)")
    parser.add_argument("--max-epochs", type=int, help="epochs per trial (default: each sweep's own)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed on to every sweep")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="tests only: run on fake GPUs and skip the assertion that trials trained on CUDA")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, results, MLflow)")
    args = parser.parse_args(argv)
    names = args.sweeps.split(",")
    if unknown := [n for n in names if n not in SWEEPS]:
        parser.error(f"--sweeps must name {', '.join(SWEEPS)}, but got {', '.join(unknown)}")
    settings = [float(g) for g in args.settings.split(",")]

    if args.address is None and not args.allow_cpu and (why := cuda_line()):
        print(why)
        return 0
    gpus = gpus_available(args.address)
    if gpus < 1:
        print(f"bench/gpu_check.py: the cluster at {args.address} has no GPU and cannot start a node with one")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="raysweep_gpu_check_"))
    print(f"bench/gpu_check.py: {gpus:g} GPU(s); working in {tmp}", flush=True)
    try:
        rows = {(name, gpu): run_sweep(name, gpu, args=args, tmp=tmp, concurrent=max(1, round(gpus / gpu)))
                for name in names for gpu in settings}
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print("\n" + report(rows))
    print("every trial trained on CUDA" if not args.allow_cpu else "device check skipped (--allow-cpu)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
