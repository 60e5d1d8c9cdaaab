"""Benchmark (issue #12, section 3): the private memory of each Ray worker that runs a trial, digits against CIFAR-10,
with the old float-copy train.py and the new shared-uint8 one side by side.

    .venv/bin/python bench/memory.py --data-dir ../shared/data

Each sweep (bench/sweeps/memory.py: 2 trials of a 3072-128-10 MLP side by side; CIFAR-10 on its full 45,000-image
training split, 1 epoch; digits for enough epochs to be sampled) runs as its own `python -m raysweep.run` process.
While it runs, every Ray worker below it whose title is a Tune trial (`ray::ImplicitFunc...`) is sampled every
--interval seconds: Private_Clean + Private_Dirty from /proc/<pid>/smaps_rollup, the memory no other process shares.
The peak per worker is printed, and the goal: a CIFAR-10 trial holds at most 150 MB more than a digits trial.

"old" is raysweep as it is here with raysweep/train.py taken from git (--old-ref, the commit before the change), in a
temporary copy of the package put first on PYTHONPATH, which Ray's workers inherit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEP_FILE = REPO / "bench" / "sweeps" / "memory.py"
OLD_REF = "516db89"  # main just before issue #12's shared data: train.py still made a float copy per trial
GOAL_MB = 150.0  # CIFAR-10 trial minus digits trial, private memory, at most
TRIAL_TITLE = "ray::ImplicitFunc"  # Tune runs a function trainable in an actor of this class


def private_mb(pid: int) -> float | None:
    """Private_Clean + Private_Dirty of one process in MB (10^6 bytes), or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    private = ("Private_Clean:", "Private_Dirty:")
    kb = sum(int(line.split()[1]) for line in text.splitlines() if line.startswith(private))
    return kb * 1024 / 1e6


def descendants(root: int) -> list[int]:
    """Every process below `root` (Ray's GCS and raylet are children of the driver, the workers the raylet's)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def run_sweep(*, dataset: str, epochs: int, pythonpath: Path, data_dir: str, interval: float) -> dict[int, float]:
    """One sweep in its own process; the peak private MB of each trial worker seen while it ran."""
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as work:
        command = [sys.executable, "-m", "raysweep.run", str(SWEEP_FILE), "--set", f"dataset={dataset!r}",
                   "--set", f"max_epochs={epochs}", "--data-dir", data_dir, "--storage", f"{work}/storage",
                   "--tracking-uri", f"sqlite:///{work}/mlflow.db"]
        env = {**os.environ, "PYTHONPATH": str(pythonpath)}
        with open(f"{work}/log", "w") as log:
            # cwd: not the repo. `python -m` puts the working directory first on sys.path, and Ray adds the driver's
            # to its workers' path: from REPO both would import today's raysweep whatever PYTHONPATH says.
            sweep = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
            peaks: dict[int, float] = {}
            while sweep.poll() is None:
                for pid in descendants(sweep.pid):
                    if title(pid).startswith(TRIAL_TITLE) and (mb := private_mb(pid)) is not None:
                        peaks[pid] = max(peaks.get(pid, 0.0), mb)
                time.sleep(interval)
        if sweep.returncode != 0 or not peaks:
            tail = Path(f"{work}/log").read_text()[-3000:]
            raise SystemExit(f"{dataset}: the sweep exited {sweep.returncode}; {len(peaks)} trial workers seen\n{tail}")
    return peaks


def old_package(ref: str, into: Path) -> Path:
    """A copy of raysweep/ with train.py as of `ref`; returns the folder to put on PYTHONPATH."""
    shutil.copytree(REPO / "raysweep", into / "raysweep", ignore=shutil.ignore_patterns("__pycache__"))
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:raysweep/train.py"], capture_output=True,
                            text=True, check=True).stdout
    (into / "raysweep" / "train.py").write_text(source)
    return into


def load_line(label: str) -> str:
    one, five, fifteen = os.getloadavg()
    return f"{label}: load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"), help="holds cifar-10-batches-*")
    parser.add_argument("--versions", nargs="+", default=["old", "new"], choices=["old", "new"])
    parser.add_argument("--old-ref", default=OLD_REF, help="git commit whose raysweep/train.py is 'old'")
    parser.add_argument("--digits-epochs", type=int, default=30, help="enough for the digits trials to be sampled")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    args = parser.parse_args()

    print(load_line("start"))
    results: dict[tuple[str, str], dict[int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_memory_old_") as old_dir:
        paths = {"new": REPO, "old": old_package(args.old_ref, Path(old_dir)) if "old" in args.versions else REPO}
        for version in args.versions:
            for dataset, epochs in (("digits", args.digits_epochs), ("cifar10", 1)):
                started = time.time()
                peaks = run_sweep(dataset=dataset, epochs=epochs, pythonpath=paths[version],
                                  data_dir=str(Path(args.data_dir).resolve()), interval=args.interval)
                results[version, dataset] = peaks
                print(f"{version:4s} {dataset:8s} {time.time() - started:6.1f} s  peak private MB per trial worker: "
                      + ", ".join(f"{mb:.0f}" for mb in sorted(peaks.values())))

    print("\nprivate memory per trial worker, MB (mean of the workers' peaks)")
    print(f"{'':6s}{'digits':>10s}{'cifar10':>10s}{'cifar10 - digits':>20s}")
    for version in args.versions:
        digits, cifar = (statistics.mean(results[version, d].values()) for d in ("digits", "cifar10"))
        verdict = "MET" if cifar - digits <= GOAL_MB else "NOT MET"
        print(f"{version:6s}{digits:10.0f}{cifar:10.0f}{cifar - digits:20.0f}   (goal <= {GOAL_MB:.0f}: {verdict})")
    print(load_line("end"))


if __name__ == "__main__":
    main()
