"""Peer 2 of bench/peers.py: the search written the plain Ray Tune way, as Ray's own PyTorch examples write it.

Modelled on ray/tune/examples/cifar10_pytorch.py ("How to use Tune with PyTorch") and mlflow_example.py as installed
with Ray 2.60: a function trainable that loads CIFAR-10 with torchvision inside every trial (ToTensor + Normalize per
image), one DataLoader per split and trial, `tune.report(metrics, checkpoint=...)` every epoch, HyperOptSearch over a
plain Tune search space, MLflowLoggerCallback on the driver, 1 CPU per trial. What differs from the example, and why:
- the model, optimizer and penalty are the benchmark's (MLP 3072-400-10 with batch norm, Adam, elastic net on the
  last layer), built exactly as raysweep builds them, so only the machinery differs;
- validation is the first 5,000 training images (Subset, not random_split), as in the other two contestants;
- num_workers=0: the example's 8 would put 2 trials x 8 loader processes on 2 cores (bench/peers.py
  --loader-workers N tries others);
- torchvision reads the python pickles bench/peers.py converted from the binary files, so their md5s are the
  converted files' own (in md5.json beside them) and torchvision still checks them, as it does the official ones.
It is standalone on purpose (no raysweep import): it is what a user would write without raysweep.

    python bench/peer_plain_tune.py --data-root DIR_WITH_cifar-10-batches-py --tracking-uri sqlite:///x.db --storage DIR
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import ray
import torch
import torch.nn.functional as F
import torchvision.transforms as transforms
from filelock import FileLock
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune import Checkpoint
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.hyperopt import HyperOptSearch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets

# The example's CIFAR-10 constants (per-channel mean; its "std" is the mean per-pixel std), in [0, 1] units.
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
VAL_SIZE = 5000
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]


def cifar10_class(data_dir: str) -> type[datasets.CIFAR10]:
    """torchvision's CIFAR10, checking the converted pickles' md5s instead of the official ones."""
    md5 = json.loads((Path(data_dir) / "cifar-10-batches-py" / "md5.json").read_text())
    return type("CIFAR10", (datasets.CIFAR10,), {
        "train_list": [[name, md5[name]] for name in TRAIN_FILES],
        "test_list": [["test_batch", md5["test_batch"]]],
        "meta": {"filename": "batches.meta", "key": "label_names", "md5": md5["batches.meta"]},
    })


def load_data(data_dir: str) -> tuple[datasets.CIFAR10, datasets.CIFAR10]:
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    cifar10 = cifar10_class(data_dir)
    with FileLock(os.path.join(data_dir, ".data.lock")):  # as the example: trials load at the same time
        trainset = cifar10(root=data_dir, train=True, download=False, transform=transform)
        testset = cifar10(root=data_dir, train=False, download=False, transform=transform)
    return trainset, testset


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


def elastic_net(w: torch.Tensor, *, alpha: float, l1_ratio: float) -> torch.Tensor:
    """alpha x (l1_ratio x |w|_1 + (1 - l1_ratio) / 2 x |w|_2^2), scikit-learn's convention, as raysweep's."""
    return alpha * (l1_ratio * w.abs().sum() + (1 - l1_ratio) / 2 * w.pow(2).sum())


def train_cifar(config: dict, *, data_dir: str, epochs: int, seed: int, loader_workers: int,
                subset: int | None) -> None:
    torch.manual_seed(seed)
    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), lr=config["lr"], eps=1e-7)  # Keras' eps, as the seed and raysweep
    start = 0
    if tune.get_checkpoint():
        with tune.get_checkpoint().as_directory() as folder:
            model_state, optimizer_state, start = torch.load(os.path.join(folder, "checkpoint.pt"))
            net.load_state_dict(model_state)
            optimizer.load_state_dict(optimizer_state)

    trainset, _ = load_data(data_dir)  # the example loads both splits in every trial
    val_subset = Subset(trainset, range(VAL_SIZE))
    train_end = len(trainset) if subset is None else VAL_SIZE + subset  # scaled down: the first `subset` after val
    train_subset = Subset(trainset, range(VAL_SIZE, train_end))
    batch_size = int(config["batch_size"])
    trainloader = DataLoader(train_subset, batch_size=batch_size, shuffle=True, num_workers=loader_workers)
    valloader = DataLoader(val_subset, batch_size=batch_size, shuffle=True, num_workers=loader_workers)

    for epoch in range(start, epochs):
        started = time.perf_counter()
        net.train()
        for inputs, labels in trainloader:
            optimizer.zero_grad()
            loss = F.cross_entropy(net(inputs), labels)
            loss = loss + elastic_net(net.layers[-1].weight, alpha=config["alpha"], l1_ratio=config["l1_ratio"])
            loss.backward()
            optimizer.step()

        net.eval()
        val_loss, correct, total = 0.0, 0, 0
        with torch.no_grad():
            for inputs, labels in valloader:
                outputs = net(inputs)
                val_loss += F.cross_entropy(outputs, labels, reduction="sum").item()
                correct += (outputs.argmax(1) == labels).sum().item()
                total += labels.size(0)

        with tempfile.TemporaryDirectory() as folder:
            torch.save((net.state_dict(), optimizer.state_dict(), epoch + 1), os.path.join(folder, "checkpoint.pt"))
            tune.report({"loss": val_loss / total, "accuracy": correct / total, "epoch": epoch + 1,
                         "epoch_time_s": time.perf_counter() - started, "torch_threads": torch.get_num_threads()},
                        checkpoint=Checkpoint.from_directory(folder))


def test_accuracy(checkpoint: Checkpoint, *, data_dir: str) -> float:
    """The best checkpoint on the 10,000 test images, in eval mode (batch norm's running statistics)."""
    net = Net()
    with checkpoint.as_directory() as folder:
        model_state, _, _ = torch.load(os.path.join(folder, "checkpoint.pt"))
    net.load_state_dict(model_state)
    net.eval()
    _, testset = load_data(data_dir)
    correct = 0
    with torch.no_grad():
        for images, labels in DataLoader(testset, batch_size=1000, shuffle=False):
            correct += (net(images).argmax(1) == labels).sum().item()
    return correct / len(testset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="folder holding cifar-10-batches-py (and md5.json)")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--startup", type=int, default=3, help="TPE's random start-up trials (raysweep's for 12)")
    parser.add_argument("--loader-workers", type=int, default=0)
    parser.add_argument("--subset", type=int, help="train on the first N training images after validation's")
    parser.add_argument("--asha", action="store_true",
                        help="stop trials early with Tune's ASHAScheduler (grace 1 epoch, reduction factor 3, as "
                             "raysweep's asha in bench/peers.py)")
    args = parser.parse_args()

    ray.init(include_dashboard=False)  # the example's ray.init(), without the dashboard, as raysweep starts Ray
    search_space = {
        "batch_size": tune.choice([64, 128, 256]),
        "lr": tune.loguniform(1e-4, 1e-2),
        "alpha": tune.loguniform(1e-6, 1e-2),
        "l1_ratio": tune.uniform(0.0, 1.0),
    }
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(train_cifar, data_dir=args.data_root, epochs=args.epochs, seed=args.seed,
                                 loader_workers=args.loader_workers, subset=args.subset),
            resources={"cpu": 1},
        ),
        tune_config=tune.TuneConfig(
            metric="accuracy",
            mode="max",
            search_alg=HyperOptSearch(metric="accuracy", mode="max", n_initial_points=args.startup,
                                      random_state_seed=args.seed),
            num_samples=args.trials,
            # The example's scheduler (it uses reduction factor 2); grace and factor here are raysweep's in peers.py.
            scheduler=ASHAScheduler(max_t=args.epochs, grace_period=1, reduction_factor=3) if args.asha else None,
        ),
        run_config=tune.RunConfig(
            name="peers_plain_tune",
            storage_path=args.storage,
            callbacks=[MLflowLoggerCallback(tracking_uri=args.tracking_uri, experiment_name="peers_plain_tune")],
        ),
        param_space=search_space,
    )
    results = tuner.fit()
    best = results.get_best_result("accuracy", "max", scope="all")  # best epoch of any trial, as raysweep picks
    best_checkpoint = best.get_best_checkpoint("accuracy", "max")
    test_acc = test_accuracy(best_checkpoint, data_dir=args.data_root)
    frames = [r.metrics_dataframe for r in results if r.metrics_dataframe is not None]
    summary = {
        "trials": len(results),
        "errors": sum(r.error is not None for r in results),
        "epochs": int(sum(len(f) for f in frames)),
        "best_val_acc": float(best.metrics_dataframe["accuracy"].max()),
        "test_acc": test_acc,
        "best_config": best.config,
        "trial_time_s": float(sum(f["epoch_time_s"].sum() for f in frames)),
        "torch_threads": sorted({int(t) for f in frames for t in f["torch_threads"]}),
    }
    ray.shutdown()
    print("PEER_RESULT " + json.dumps(summary))


if __name__ == "__main__":
    main()
