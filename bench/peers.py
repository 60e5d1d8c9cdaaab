"""Benchmark (issues #5 and #12, "Versus the peers"): raysweep against plain Ray Tune, hyperopt.fmin and Optuna.

    .venv/bin/python bench/peers.py                      # both measures over seeds 0, 1, 2, then ASHA's saving
    .venv/bin/python bench/peers.py --only peers         # the two measures alone (12 trials x 3 epochs, 3 seeds)
    .venv/bin/python bench/peers.py --only asha          # ASHA's saving alone (a 24-config grid x 9 epochs, then ASHA)

The same search on CIFAR-10 (MLP 3072-400-10 with batch norm, Adam, elastic net on the last layer; TPE over batch
size, lr, alpha, l1_ratio), the same budget and split (validation = the first 5,000 training images), run one after
the other, each as its own process timed from start to exit (imports, data, Ray start-up and shutdown, MLflow, test
evaluation all count):
  1. raysweep: `python -m raysweep.run bench/sweeps/peers_tpe.py ...` (2 trials at a time);
  2. bench/peer_plain_tune.py: Ray's own PyTorch example pattern (torchvision + DataLoader inside each trial);
  3. bench/peer_fmin.py: sequential hyperopt.fmin over in-memory tensors, torch on both cores;
  4. bench/peer_optuna.py: sequential Optuna (TPE) over in-memory tensors, torch on both cores.
Two measures, each over every seed of --seeds, reported as mean, standard deviation and range:
  - same budget: no early stopping anywhere (raysweep and plain Tune without ASHA, Optuna without its pruner): the
    engines' overhead side by side;
  - time to quality: each tool with its natural early stopping (raysweep and plain Tune with ASHA, grace 1 epoch,
    factor 3; Optuna with its successive-halving pruner, min 1 epoch, factor 3; fmin with none, so its same-budget
    run is reused). Per seed, the quality bar is the best test accuracy any contestant reached minus --quality-within
    (0.5 points); a contestant's time to quality is its wall time from spawn to exit when its best trial's test
    accuracy clears the bar, and "not reached" otherwise (each run evaluates one best trial, at its end, so the time
    is the whole run's).
torchvision reads only the python-pickle CIFAR layout, so the binary files are converted once into a temporary
cifar-10-batches-py before anything is timed. The load average is printed before and after each contestant: the
machine may be shared. Ratios are printed, never asserted: goals are judged by a reader.

ASHA's saving: the grid (bench/sweeps/peers_grid.py, 24 configs x 9 epochs) gives the best val_acc and the epoch cost;
then ASHA+TPE over the same configs (peers_asha.py); its per-epoch reports, in the order MLflow received them, give
the epochs spent until its best val_acc so far is within --within of the grid's best.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "bench" / "sweeps"
PLAIN_TUNE = REPO / "bench" / "peer_plain_tune.py"
GOAL_ASHA_FRACTION = 1 / 5  # ASHA's epochs to get within --within of the grid's best / the grid's epochs, at most
CIFAR_BIN = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
CIFAR_RECORD = 1 + 3072  # label byte + 1,024 R, 1,024 G, 1,024 B pixel bytes


def default_data_dir() -> str:
    return os.environ.get("RAYSWEEP_SHARED_DATA") or str(REPO.parent / "shared" / "data")


def load_average() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"


# ------------------------------------------------------------------------------------------- untimed setup
def convert_cifar(bin_dir: Path, *, root: Path) -> Path:
    """The binary CIFAR-10 as torchvision's python pickles in root/cifar-10-batches-py, with an md5.json beside them."""
    out = root / "cifar-10-batches-py"
    out.mkdir(parents=True)
    md5 = {}
    for name in CIFAR_BIN:
        records = np.fromfile(bin_dir / name, np.uint8).reshape(-1, CIFAR_RECORD)
        stem = name.removesuffix(".bin")
        entry = {"batch_label": stem, "labels": records[:, 0].astype(int).tolist(),
                 "data": np.ascontiguousarray(records[:, 1:]), "filenames": [f"{stem}_{i}.png" for i in
                                                                            range(len(records))]}
        (out / stem).write_bytes(pickle.dumps(entry))
        md5[stem] = hashlib.md5((out / stem).read_bytes()).hexdigest()
    names = (bin_dir / "batches.meta.txt").read_text().split()
    (out / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_cases_per_batch": 10000,
                                                     "num_vis": 3072}))
    md5["batches.meta"] = hashlib.md5((out / "batches.meta").read_bytes()).hexdigest()
    (out / "md5.json").write_text(json.dumps(md5))
    return out


def check_conversion(root: Path, *, data_dir: str) -> None:
    """torchvision's view of the converted files holds exactly raysweep.data's pixels and labels."""
    sys.path.insert(0, str(REPO / "bench"))
    from peer_plain_tune import cifar10_class

    from raysweep import data

    ours = data.load("cifar10", data_dir=data_dir, val_size=5000)
    theirs = cifar10_class(str(root))(root=str(root), train=True)
    pixels = np.concatenate([ours.x_val, ours.x_train]).transpose(0, 2, 3, 1)  # (N, H, W, C), torchvision's layout
    labels = np.concatenate([ours.y_val, ours.y_train])
    if not (np.array_equal(theirs.data, pixels) and np.array_equal(np.asarray(theirs.targets), labels)):
        raise SystemExit("bench/peers.py: the converted pickles differ from raysweep.data's arrays; not benchmarking")


# --------------------------------------------------------------------------------------------- timed runs
def timed(name: str, command: list[str], *, log: Path) -> float:
    """Run one contestant to completion, its output to `log`; wall seconds from spawn to exit."""
    print(f"\n[{name}] before: {load_average()}\n[{name}] $ {' '.join(command)}", flush=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # each contestant starts its own local Ray
    started = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    print(f"[{name}] after {seconds:.0f} s: {load_average()}", flush=True)
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise SystemExit(f"bench/peers.py: {name} exited with {code}; the end of {log}:\n{tail}")
    return seconds


def peer_result(log: Path) -> dict:
    lines = [line for line in log.read_text().splitlines() if line.startswith("PEER_RESULT ")]
    return json.loads(lines[-1].removeprefix("PEER_RESULT "))


def raysweep_command(sweep_file: Path, *, args: argparse.Namespace, tmp: Path, extra: list[str],
                     seed: int | None = None) -> list[str]:
    return [sys.executable, "-m", "raysweep.run", str(sweep_file), "--data-dir", args.data_dir,
            "--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--storage", str(tmp / "results"),
            "--seed", str(args.seed if seed is None else seed), *extra]


def raysweep_table(tmp: Path, name: str) -> pd.DataFrame:
    (csv,) = sorted((tmp / "results" / name).glob("*/trials.csv"))[-1:]
    return pd.read_csv(csv)


def raysweep_result(table: pd.DataFrame) -> dict:
    best = table[table.test_acc.notna()].iloc[0]
    config = {k: best[k] for k in ("batch_size", "lr", "regularizer.alpha", "regularizer.l1_ratio") if k in best}
    return {"trials": len(table), "errors": int((table.status == "failed").sum()), "epochs": int(table.epochs.sum()),
            "best_val_acc": float(best.best_val_acc), "test_acc": float(best.test_acc),
            "best_config": {k: (v.item() if hasattr(v, "item") else v) for k, v in config.items()},
            "trial_time_s": float(table.wall_time_s.sum()), "torch_threads": [1]}


def subset_options(subset: int | None, *, raysweep: bool) -> list[str]:
    if subset is None:
        return []
    return ["--set", f"subset={subset}"] if raysweep else ["--subset", str(subset)]


def contestants(args: argparse.Namespace, *, root: Path, run_dir: Path, seed: int,
                early_stopping: bool) -> dict[str, list[str]]:
    """The command of each contestant for one seed, with (time to quality) or without (same budget) early stopping."""
    budget = ["--trials", str(args.trials), "--epochs", str(args.epochs), "--seed", str(seed),
              *subset_options(args.subset, raysweep=False)]
    return {
        "raysweep": raysweep_command(SWEEPS / "peers_tpe.py", args=args, tmp=run_dir, seed=seed, extra=[
            "--num-samples", str(args.trials), "--max-epochs", str(args.epochs),
            "--set", f"scheduler={'asha' if early_stopping else 'none'}", *subset_options(args.subset, raysweep=True)]),
        "plain Ray Tune": [
            sys.executable, str(PLAIN_TUNE), "--data-root", str(root), "--tracking-uri",
            f"sqlite:///{run_dir}/plain_mlflow.db", "--storage", str(run_dir / "plain"),
            "--loader-workers", str(args.loader_workers), *budget, *(["--asha"] if early_stopping else [])],
        "hyperopt.fmin": [sys.executable, str(REPO / "bench" / "peer_fmin.py"), "--data-dir", args.data_dir, *budget],
        "Optuna": [sys.executable, str(REPO / "bench" / "peer_optuna.py"), "--data-dir", args.data_dir, *budget,
                   *(["--prune"] if early_stopping else [])],
    }


def run_measure(args: argparse.Namespace, *, root: Path, tmp: Path, seed: int, measure: str,
                reuse: dict[str, dict]) -> dict[str, dict]:
    """One seed of one measure: each contestant's wall time and result. `reuse`: rows taken from the same-budget run
    instead of running again (fmin has no early stopping, so its time-to-quality run is its same-budget run)."""
    run_dir = tmp / f"seed{seed}_{measure.replace(' ', '_')}"
    run_dir.mkdir()
    rows = {}
    for name, command in contestants(args, root=root, run_dir=run_dir, seed=seed,
                                     early_stopping=measure == "time to quality").items():
        if name in reuse:
            rows[name] = {**reuse[name], "reused": True}
            continue
        log = run_dir / f"{name.split(' (')[0].replace(' ', '_')}.log"
        seconds = timed(f"{measure}, seed {seed}: {name}", command, log=log)
        result = raysweep_result(raysweep_table(run_dir, "peers_tpe")) if name == "raysweep" else peer_result(log)
        rows[name] = {"wall_s": seconds, **result}
        print(f"[{measure}, seed {seed}: {name}] {json.dumps(rows[name], default=str)}", flush=True)
    return rows


def compare_peers(args: argparse.Namespace, tmp: Path) -> None:
    root = tmp / "torchvision"
    convert_cifar(Path(args.data_dir) / "cifar-10-batches-bin", root=root)
    check_conversion(root, data_dir=args.data_dir)
    images = "all 45,000" if args.subset is None else f"the first {args.subset:,} of the 45,000"
    print(f"\nThe same search: {args.trials} trials x {args.epochs} epochs, CIFAR-10 MLP 3072-400-10, training on "
          f"{images} training images (validation: the first 5,000)", flush=True)
    same_budget: dict[int, dict[str, dict]] = {}
    quality: dict[int, dict[str, dict]] = {}
    for seed in args.seeds:
        if "budget" in args.measures:
            same_budget[seed] = run_measure(args, root=root, tmp=tmp, seed=seed, measure="same budget", reuse={})
        if "quality" in args.measures:
            reuse = {"hyperopt.fmin": same_budget[seed]["hyperopt.fmin"]} if seed in same_budget else {}
            quality[seed] = run_measure(args, root=root, tmp=tmp, seed=seed, measure="time to quality", reuse=reuse)
    sys.path.insert(0, str(REPO / "bench"))
    from peer_stats import print_same_budget, print_time_to_quality

    if same_budget:
        print_same_budget(same_budget)
    if quality:
        print_time_to_quality(quality, within=args.quality_within)


# --------------------------------------------------------------------------------------------- ASHA's saving
def epoch_reports(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Every trial's per-epoch val_acc as MLflow received them (the driver logs each report on arrival)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], filter_string="tags.`raysweep.role` = 'trial'", max_results=1000)
    rows = [{"run": run.info.run_id, "epoch": m.step, "val_acc": m.value, "timestamp": m.timestamp}
            for run in runs for m in client.get_metric_history(run.info.run_id, "val_acc")]
    return pd.DataFrame(rows).sort_values(["timestamp", "run", "epoch"], ignore_index=True)


def asha_saving(args: argparse.Namespace, tmp: Path) -> None:
    budget = ["--max-epochs", str(args.grid_epochs), *subset_options(args.asha_subset, raysweep=True)]
    timed("grid", raysweep_command(SWEEPS / "peers_grid.py", args=args, tmp=tmp, extra=budget), log=tmp / "grid.log")
    grid = raysweep_table(tmp, "peers_grid")
    grid_best, grid_epochs = float(grid.best_val_acc.max()), int(grid.epochs.sum())
    print(f"[grid] {len(grid)} configs, {grid_epochs} epochs, best val_acc {grid_best:.4f}; "
          f"top 3: {sorted(grid.best_val_acc, reverse=True)[:3]}", flush=True)

    timed("asha+tpe", raysweep_command(SWEEPS / "peers_asha.py", args=args, tmp=tmp, extra=[
        *budget, "--num-samples", str(args.asha_samples)]), log=tmp / "asha.log")
    reports = epoch_reports(f"sqlite:///{tmp}/mlflow.db", "peers_asha")
    reports["epochs_so_far"] = np.arange(1, len(reports) + 1)
    reports["best_so_far"] = reports.val_acc.cummax()
    reached = reports[reports.best_so_far >= grid_best - args.within]
    asha = raysweep_table(tmp, "peers_asha")
    print(f"[asha+tpe] {len(asha)} trials, {len(reports)} epochs in all, best val_acc {reports.val_acc.max():.4f}; "
          f"epochs per trial: {sorted(asha.epochs.tolist())}", flush=True)
    if reached.empty:
        print(f"ASHA+TPE never got within {args.within} of the grid's best {grid_best:.4f} in {len(reports)} epochs "
              f"({len(reports) / grid_epochs:.3f} of the grid's {grid_epochs}): goal MISSED")
        return
    needed = int(reached.epochs_so_far.iloc[0])
    fraction = needed / grid_epochs
    print(f"ASHA+TPE within {args.within} of the grid's best ({grid_best:.4f}) after {needed} epochs "
          f"(best so far {reached.best_so_far.iloc[0]:.4f}) = {fraction:.3f} of the grid's {grid_epochs} epochs "
          f"(goal <= {GOAL_ASHA_FRACTION:.3f}): {'met' if fraction <= GOAL_ASHA_FRACTION else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_data_dir(), help="holds cifar-10-batches-bin (read only)")
    parser.add_argument("--only", choices=("peers", "asha"), help="run one part (default: both)")
    parser.add_argument("--trials", type=int, default=12, help="trials per contestant")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    parser.add_argument("--seed", type=int, default=0, help="the seed of ASHA's saving")
    parser.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1, 2],
                        help="comma-separated seeds of the two measures (default 0,1,2)")
    parser.add_argument("--measures", type=lambda v: v.split(","), default=["budget", "quality"],
                        help="comma-separated, of: budget (same budget), quality (time to quality)")
    parser.add_argument("--quality-within", type=float, default=0.005,
                        help="test accuracy below the best any contestant reached that still counts (0.5 points)")
    parser.add_argument("--subset", type=int, help="scaled down: train on the first N of the 45,000 training images")
    parser.add_argument("--loader-workers", type=int, default=0, help="DataLoader workers per plain Tune trial")
    parser.add_argument("--grid-epochs", type=int, default=9, help="epochs per grid config (ASHA's max_t)")
    parser.add_argument("--asha-subset", type=int, help="scaled down: the grid and ASHA train on the first N images")
    parser.add_argument("--asha-samples", type=int, default=24, help="ASHA+TPE trials")
    parser.add_argument("--within", type=float, default=0.003, help="val_acc gap to the grid's best that counts")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, results, MLflow)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="raysweep_peers_"))
    print(f"bench/peers.py: working in {tmp}; cpus {os.cpu_count()}; {load_average()}", flush=True)
    try:
        if args.only in (None, "peers"):
            compare_peers(args, tmp)
        if args.only in (None, "asha"):
            asha_saving(args, tmp)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
