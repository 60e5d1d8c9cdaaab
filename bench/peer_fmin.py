"""Peer 3 of bench/peers.py: sequential `hyperopt.fmin` with TPE, the way the seed ran its search.

One process: the data is read once into in-memory tensors (normalised by the training split's per-channel stats), each
trial builds a `DataLoader(TensorDataset(...))` and trains with torch on every core (torch's default thread count),
one trial after the other. Same model, optimizer, penalty, space, budget, seed and split as raysweep's side. Reading
the binary files goes through raysweep.data.load (a numpy.fromfile and a reshape), timed like everything else here.

    python bench/peer_fmin.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from hyperopt import STATUS_OK, Trials, fmin, hp, tpe
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from raysweep import data

EVAL_BATCH = 4096


class Net(nn.Module):
    """3072-400-10: Linear, ReLU, batch norm, Linear; He init with zero biases, as raysweep's MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(3072, 400), nn.ReLU(), nn.BatchNorm1d(400),
                                    nn.Linear(400, 10))
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def tensors(dataset: data.Dataset, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 3, 32, 32) -> float normalised by the training split's per-channel mean and std; labels int64."""
    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    return (torch.tensor(x).float().div_(255.0) - mean) / std, torch.tensor(y).long()


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    correct = sum((net(x[i:i + EVAL_BATCH]).argmax(1) == y[i:i + EVAL_BATCH]).sum().item()
                  for i in range(0, len(y), EVAL_BATCH))
    return correct / len(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subset", type=int, help="train on the first N training images after validation's")
    parser.add_argument("--startup", type=int, default=3, help="TPE's random start-up trials (raysweep's for 12)")
    args = parser.parse_args()

    # validation: the first 5,000; training: the rest, or the first `subset` of the rest (as raysweep's --set subset=N)
    dataset = data.load("cifar10", data_dir=args.data_dir, val_size=5000, seed=args.seed, subset=args.subset)
    x_train, y_train = tensors(dataset, dataset.x_train, dataset.y_train)
    x_val, y_val = tensors(dataset, dataset.x_val, dataset.y_val)
    best: dict = {"val_acc": -1.0}
    epochs_run, epoch_seconds = 0, 0.0

    def objective(params: dict) -> dict:
        nonlocal epochs_run, epoch_seconds
        torch.manual_seed(args.seed)
        net = Net()
        optimizer = torch.optim.Adam(net.parameters(), lr=params["lr"], eps=1e-7)
        loader = DataLoader(TensorDataset(x_train, y_train), batch_size=int(params["batch_size"]), shuffle=True)
        trial_best = -1.0
        for _ in range(args.epochs):
            started = time.perf_counter()
            net.train()
            for xb, yb in loader:
                optimizer.zero_grad()
                w = net.layers[-1].weight
                penalty = params["alpha"] * (params["l1_ratio"] * w.abs().sum()
                                             + (1 - params["l1_ratio"]) / 2 * w.pow(2).sum())
                (F.cross_entropy(net(xb), yb) + penalty).backward()
                optimizer.step()
            val_acc = accuracy(net, x_val, y_val)
            epochs_run += 1
            epoch_seconds += time.perf_counter() - started
            trial_best = max(trial_best, val_acc)
            if val_acc > best["val_acc"]:  # keep the best epoch of any trial, as raysweep's checkpoints do
                best.update(val_acc=val_acc, state=copy.deepcopy(net.state_dict()), params=dict(params))
        return {"loss": -trial_best, "status": STATUS_OK}

    space = {
        "batch_size": hp.choice("batch_size", [64, 128, 256]),
        "lr": hp.loguniform("lr", math.log(1e-4), math.log(1e-2)),
        "alpha": hp.loguniform("alpha", math.log(1e-6), math.log(1e-2)),
        "l1_ratio": hp.uniform("l1_ratio", 0.0, 1.0),
    }
    trials = Trials()
    fmin(objective, space, algo=partial(tpe.suggest, n_startup_jobs=args.startup), max_evals=args.trials,
         trials=trials, rstate=np.random.default_rng(args.seed), show_progressbar=False)

    net = Net()
    net.load_state_dict(best["state"])
    x_test, y_test = tensors(dataset, dataset.x_test, dataset.y_test)
    summary = {
        "trials": len(trials.trials),
        "errors": 0,
        "epochs": epochs_run,
        "best_val_acc": best["val_acc"],
        "test_acc": accuracy(net, x_test, y_test),
        "best_config": best["params"],
        "trial_time_s": epoch_seconds,
        "torch_threads": [torch.get_num_threads()],
    }
    print("PEER_RESULT " + json.dumps(summary))


if __name__ == "__main__":
    main()
