"""Peer 4 of bench/peers.py: Optuna, the way an Optuna user writes it: TPE, a successive-halving pruner, in process,
one trial after the other, torch on every core.

Same model, optimizer, penalty, space, budget, seed, split and data path as bench/peer_fmin.py (whose Net, tensors and
accuracy it imports): in-memory tensors normalised by the training split's per-channel stats, a
`DataLoader(TensorDataset(...))` per trial. Each epoch reports val_acc to the trial; with --prune, Optuna's
SuccessiveHalvingPruner(min_resource=1, reduction_factor=3) stops weak trials at 1, 3, 9 ... epochs, as raysweep's
ASHA does (grace 1, factor 3); without it, every trial trains the full budget.

    python bench/peer_optuna.py --data-dir ../shared/data [--prune]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import optuna
import torch
import torch.nn.functional as F
from peer_fmin import Net, accuracy, tensors  # bench/ is on sys.path when this file runs as a script
from torch.utils.data import DataLoader, TensorDataset

from raysweep import data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subset", type=int, help="train on the first N training images after validation's")
    parser.add_argument("--startup", type=int, default=3, help="TPE's random start-up trials (raysweep's for 12)")
    parser.add_argument("--prune", action="store_true", help="successive halving (min 1 epoch, factor 3)")
    args = parser.parse_args()

    dataset = data.load("cifar10", data_dir=args.data_dir, val_size=5000, seed=args.seed, subset=args.subset)
    x_train, y_train = tensors(dataset, dataset.x_train, dataset.y_train)
    x_val, y_val = tensors(dataset, dataset.x_val, dataset.y_val)
    best: dict = {"val_acc": -1.0}
    epochs_run, epoch_seconds = 0, 0.0

    def objective(trial: optuna.Trial) -> float:
        nonlocal epochs_run, epoch_seconds
        params = {
            "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256]),
            "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "alpha": trial.suggest_float("alpha", 1e-6, 1e-2, log=True),
            "l1_ratio": trial.suggest_float("l1_ratio", 0.0, 1.0),
        }
        torch.manual_seed(args.seed)
        net = Net()
        optimizer = torch.optim.Adam(net.parameters(), lr=params["lr"], eps=1e-7)
        loader = DataLoader(TensorDataset(x_train, y_train), batch_size=params["batch_size"], shuffle=True)
        trial_best = -1.0
        for epoch in range(1, args.epochs + 1):
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
                best.update(val_acc=val_acc, state=copy.deepcopy(net.state_dict()), params=params)
            trial.report(val_acc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return trial_best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3) if args.prune
              else optuna.pruners.NopPruner())
    study = optuna.create_study(direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.TPESampler(n_startup_trials=args.startup, seed=args.seed))
    study.optimize(objective, n_trials=args.trials)

    net = Net()
    net.load_state_dict(best["state"])
    x_test, y_test = tensors(dataset, dataset.x_test, dataset.y_test)
    summary = {
        "trials": len(study.trials),
        "errors": sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
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
