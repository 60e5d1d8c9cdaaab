"""Issue #14's cost goal: one configuration trained with N seeds (raysweep.seeds, lockstep inside one trial) costs at
most 1.05x N single trials. Both are timed side by side in this process, alternating, on the same data.

    .venv/bin/python bench/repeats.py                       # digits, 3 seeds, 5 epochs, 3 rounds
    .venv/bin/python bench/repeats.py --dataset mnist --data-dir ../shared/data --subset 10000 --repeats 5

Prints each round's seconds and the ratio of the medians: (N seeds in lockstep) / (N single trials one after another).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from raysweep import data
from raysweep.config import TrialConfig
from raysweep.seeds import run_seeds, seed_configs
from raysweep.train import run_trial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a trial with cpu=1
    dataset = data.load(args.dataset, data_dir=args.data_dir, subset=args.subset)
    config = TrialConfig.from_dict({"hidden": [128], "dropout": 0.2, "optimizer": "adam", "lr": 1e-3,
                                    "batch_size": 32, "max_epochs": args.epochs})
    lockstep, single = [], []
    for round_ in range(1, args.rounds + 1):
        started = time.perf_counter()
        for _ in run_seeds(config, dataset, repeats=args.repeats):
            pass
        lockstep.append(time.perf_counter() - started)
        started = time.perf_counter()
        for seed_config in seed_configs(config, repeats=args.repeats):
            for _ in run_trial(seed_config, dataset):
                pass
        single.append(time.perf_counter() - started)
        print(f"round {round_}: {args.repeats} seeds in lockstep {lockstep[-1]:.2f} s, "
              f"{args.repeats} single trials {single[-1]:.2f} s", flush=True)
    ratio = statistics.median(lockstep) / statistics.median(single)
    print(f"lockstep / single trials = {ratio:.3f} (goal <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")


if __name__ == "__main__":
    main()
