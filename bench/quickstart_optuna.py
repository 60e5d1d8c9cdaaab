"""The quickstart's search as a lean single-process Optuna script: the yardstick of issue #12's goal (raysweep's
quickstart, timed as a whole process, within 2.0x of this one's wall time).

    time .venv/bin/python bench/quickstart_optuna.py   # not yet timed idle (issue #12 measured such a script: 11.8 s)

The search of sweeps/quickstart.py, written the way an Optuna user writes it: TPE (Optuna's defaults, seeded), a
SuccessiveHalvingPruner(min_resource=2, reduction_factor=3) as the quickstart's ASHA (grace 2 epochs, factor 3), 20
trials of at most 12 epochs, the known-good config tried first, one process, tensors in memory, no MLflow, torch on
every core. The same data split as raysweep (scikit-learn's digits through raysweep.data.load, which is a train/test
split and a validation cut; the data set is bundled, nothing is downloaded). It prints its wall time from the start
of Python's work on this file, and the best trial's validation and test accuracy.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the heavy imports: they are part of the cost a user waits for

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402

import optuna  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from raysweep import data  # noqa: E402

BATCH, HIDDEN, MAX_EPOCHS, TRIALS = 32, 128, 12, 20  # sweeps/quickstart.py's fixed settings and budget


def model(dropout: float) -> nn.Module:
    """64-128-10 with ReLU and dropout after the hidden layer, as raysweep's MLP(hidden=[128])."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, HIDDEN), nn.ReLU(), nn.Dropout(dropout), nn.Linear(HIDDEN, 10))


def penalty(net: nn.Module, *, alpha: float, l1_ratio: float) -> torch.Tensor:
    """scikit-learn's elastic net over every weight matrix: alpha * (l1_ratio |w|_1 + (1 - l1_ratio) / 2 |w|_2^2)."""
    weights = [p for name, p in net.named_parameters() if name.endswith("weight")]
    return alpha * sum(l1_ratio * w.abs().sum() + (1 - l1_ratio) / 2 * w.pow(2).sum() for w in weights)


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    return (net(x).argmax(1) == y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=TRIALS)
    args = parser.parse_args()

    split = data.load("digits", seed=args.seed)  # 8x8 uint8 images; validation: 20% of the training split

    def tensors(x, y):
        mean, std = torch.tensor(split.mean).view(1, -1, 1, 1), torch.tensor(split.std).view(1, -1, 1, 1)
        return (torch.tensor(x).float() / 255 - mean) / std, torch.tensor(y).long()

    x_train, y_train = tensors(split.x_train, split.y_train)
    x_val, y_val = tensors(split.x_val, split.y_val)
    best: dict = {"val_acc": -1.0}

    def objective(trial: optuna.Trial) -> float:
        name = trial.suggest_categorical("optimizer", ["sgd", "adam", "rmsprop"])
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        regularizer = trial.suggest_categorical("regularizer", ["none", "l2", "elastic_net"])
        alpha = trial.suggest_float("alpha", 1e-5, 1e-2, log=True) if regularizer != "none" else 0.0
        l1_ratio = trial.suggest_float("l1_ratio", 0.0, 1.0) if regularizer == "elastic_net" else 0.0
        net = model(trial.suggest_float("dropout", 0.0, 0.5))
        if name == "sgd":
            optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=trial.suggest_float("momentum", 0.0, 0.95))
        elif name == "adam":
            optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=(trial.suggest_float("beta1", 0.8, 0.95),
                                                                          0.999))
        else:
            optimizer = torch.optim.RMSprop(net.parameters(), lr=lr, alpha=trial.suggest_float("rho", 0.8, 0.99))
        torch.manual_seed(args.seed)
        trial_best = 0.0
        for epoch in range(1, MAX_EPOCHS + 1):
            net.train()
            for batch in torch.randperm(len(y_train)).split(BATCH):
                optimizer.zero_grad()
                loss = F.cross_entropy(net(x_train[batch]), y_train[batch])
                if alpha:
                    loss = loss + penalty(net, alpha=alpha, l1_ratio=l1_ratio)
                loss.backward()
                optimizer.step()
            val_acc = accuracy(net, x_val, y_val)
            trial_best = max(trial_best, val_acc)
            if val_acc > best["val_acc"]:  # the best epoch of any trial, as raysweep's checkpoints keep it
                best.update(val_acc=val_acc, state=copy.deepcopy(net.state_dict()), dropout=net[3].p,
                            params=dict(trial.params), epoch=epoch)
            trial.report(val_acc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return trial_best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed),
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3))
    # The quickstart's points_to_evaluate: a known-good config first.
    study.enqueue_trial({"optimizer": "adam", "beta1": 0.9, "lr": 1e-3, "regularizer": "none", "dropout": 0.0})
    study.optimize(objective, n_trials=args.trials)

    net = model(best["dropout"])
    net.load_state_dict(best["state"])
    test_acc = accuracy(net, *tensors(split.x_test, split.y_test))
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    wall_s = time.perf_counter() - STARTED
    print(f"quickstart_optuna: {len(study.trials)} trials ({pruned} pruned) in {wall_s:.1f} s; best val_acc "
          f"{best['val_acc']:.4f} (epoch {best['epoch']}), test_acc {test_acc:.4f}; torch threads "
          f"{torch.get_num_threads()}")
    print("PEER_RESULT " + json.dumps({"trials": len(study.trials), "pruned": pruned, "wall_s": wall_s,
                                       "best_val_acc": best["val_acc"], "test_acc": test_acc,
                                       "best_config": best["params"]}))


if __name__ == "__main__":
    main()
