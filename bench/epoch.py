"""Benchmark (issues #2, #12): raysweep's train_epoch against its old self, a bare loop and a DataLoader, on MNIST.

    .venv/bin/python bench/epoch.py                      # make bench; 32 min at load 12-20 on 2 cores
    .venv/bin/python bench/epoch.py --batch-sizes 128 --skip-full-batch1 --rounds 5
    .venv/bin/python bench/epoch.py --old-ref ''         # without the old train.py (needs no git)

Every variant trains the same model (784-300-100-10, batch norm after hidden layer 1, dropout 0.2 after hidden layer
2) from the same initial weights on the same data, for one epoch per round. The variants run interleaved
(ours, old, bare, loader, ours, old, ...) after one untimed warm-up epoch each, so that load from other users of
the machine hits them alike; the figures are medians over the rounds. Ratios are printed, never asserted: goals are
judged by a reader.

  ours    raysweep.train.train_epoch (as a trial runs it: also counts accuracy, checks for divergence) on the data set's
          uint8 images, shared, each batch normalised as it is taken
  old     train_epoch as it was before issue #12 (raysweep/train.py at --old-ref, loaded from git as its own module),
          on a normalised float32 copy of the split, as every trial held one then
  bare    a hand-written loop over the float copy: per-epoch randperm, index slices, zero_grad / forward / CE /
          backward / step, the loss summed on the device; torch's SGD with its defaults (L2 as weight_decay)
  loader  the same loop fed by DataLoader(TensorDataset(x, y), batch_size=B, shuffle=True), num_workers=0
Batch 1 is timed on the first --batch1-steps training images per round, for each thread count, and one full
55,000-step epoch of ours is timed once.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from raysweep import data
from raysweep.config import TrialConfig
from raysweep.models import BatchNorm1dAnySize, build_model
from raysweep.optim import build_optimizer
from raysweep.regularize import build_penalty
from raysweep.train import DeviceData, evaluate, to_tensors, train_epoch

REPO = Path(__file__).resolve().parents[1]
GOAL_BARE = 1.03  # ours / bare loop, at most
GOAL_OLD = 1.03  # ours / old (issue #12: shared uint8 batches normalised per step against the float copy), at most
OLD_REF = "516db89"  # main just before issue #12: train.py still normalised a float copy of each split per trial
GOAL_LOADER = 1.2  # DataLoader loop / ours, at least
GOAL_BATCH1_S = 60.0  # one full batch-1 epoch, at most (2 cores)

# The study's network; the optimizer and regularizer differ per section.
MODEL = {"model": "mlp", "hidden": (300, 100), "batch_norm": (1,), "dropout": 0.2, "dropout_after": (2,)}
MINIBATCH = {**MODEL, "optimizer": "momentum", "optimizer.momentum": 0.9, "lr": 0.01}
BATCH1 = {**MODEL, "optimizer": "sgd", "lr": 0.01, "batch_size": 1,
          "regularizer": "l2", "regularizer.alpha": 1e-4, "regularizer.layers": "first"}


class Variant:
    """One contestant: a model, an optimizer and an epoch function, timed one epoch at a time on `threads` threads."""

    def __init__(self, name: str, run: Callable[[], float]) -> None:
        self.name, self.run, self.threads = name, run, torch.get_num_threads()
        self.seconds: list[float] = []  # wall
        self.cpu: list[float] = []  # this process's CPU time: all threads, spinning included
        self.losses: list[float] = []

    def time_epoch(self) -> None:
        torch.set_num_threads(self.threads)
        started, cpu = time.perf_counter(), time.process_time()
        loss = self.run()
        self.seconds.append(time.perf_counter() - started)
        self.cpu.append(time.process_time() - cpu)
        self.losses.append(loss)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def bare_model(ours: nn.Module, *, batch_size: int) -> nn.Sequential:
    """The same network written out by hand, with our initial weights.

    torch's BatchNorm1d cannot train on a batch of one, so at batch size 1 the hand-written net keeps ours.
    """
    layers = [copy.deepcopy(layer) for layer in ours.layers]
    if batch_size > 1:
        layers = [nn.BatchNorm1d(layer.num_features) if isinstance(layer, BatchNorm1dAnySize) else layer
                  for layer in layers]
    net = nn.Sequential(*layers)
    net.load_state_dict({key.removeprefix("layers."): value for key, value in ours.state_dict().items()})
    return net


def load_old_train(ref: str) -> types.ModuleType | None:
    """raysweep/train.py as of git `ref`, imported as its own module beside today's; None (said why) if git cannot."""
    done = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:raysweep/train.py"], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"old: not run, `git show {ref}:raysweep/train.py` failed: {done.stderr.strip().splitlines()[0]}")
        return None
    path = Path(tempfile.mkdtemp(prefix="bench_epoch_")) / "raysweep_train_old.py"
    path.write_text(done.stdout)
    spec = importlib.util.spec_from_file_location("raysweep_train_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def ours_variant(config: TrialConfig, tensors: DeviceData, model: nn.Module, *, epoch: Callable = train_epoch,
                 name: str = "ours") -> Variant:
    model = copy.deepcopy(model)
    optimizer = build_optimizer(model.parameters(), config)
    penalty = build_penalty(model, config)
    generator = torch.Generator().manual_seed(0)
    steps = [0]

    def run() -> float:
        metrics = epoch(model, optimizer, tensors, config=config, penalty=penalty, first_step=steps[0],
                        generator=generator)
        steps[0] = metrics["steps"]
        return metrics["train_loss"]

    return Variant(name, run)


def _hand_step(net: nn.Module, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """zero_grad, forward, cross-entropy, backward, step; the batch's summed loss, kept on the device."""
    optimizer.zero_grad()
    loss = F.cross_entropy(net(xb), yb)
    loss.backward()
    optimizer.step()
    return loss.detach() * len(yb)


def _hand_optimizer(net: nn.Module, config: TrialConfig) -> torch.optim.Optimizer:
    """torch's SGD with its defaults (foreach=None: the per-tensor loop on the CPU).

    L2 on the first layer, as a careful hand-written loop does it: that layer's weight_decay, which adds alpha * w to
    its gradient inside the step; the same gradient as alpha / 2 * |w|^2 in the loss, without autograd's passes.
    """
    first = net[1].weight
    l2 = config.regularizer_alpha if config.regularizer == "l2" else 0.0
    groups = [{"params": [first], "weight_decay": l2}, {"params": [p for p in net.parameters() if p is not first]}]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.optimizer_momentum or 0.0)


def bare_variant(config: TrialConfig, tensors: DeviceData, model: nn.Module) -> Variant:
    net = bare_model(model, batch_size=config.batch_size)
    optimizer = _hand_optimizer(net, config)
    generator = torch.Generator().manual_seed(0)
    x, y, batch = tensors.x_train, tensors.y_train, config.batch_size

    def run() -> float:
        net.train()
        order = torch.randperm(len(y), generator=generator)
        loss_sum = torch.zeros(())  # on the device: no sync per step
        for start in range(0, len(y), batch):
            idx = order[start : start + batch]
            loss_sum += _hand_step(net, optimizer, x[idx], y[idx])
        return loss_sum.item() / len(y)

    return Variant("bare", run)


def loader_variant(config: TrialConfig, tensors: DeviceData, model: nn.Module) -> Variant:
    net = bare_model(model, batch_size=config.batch_size)
    optimizer = _hand_optimizer(net, config)
    loader = DataLoader(TensorDataset(tensors.x_train, tensors.y_train), batch_size=config.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(0))

    def run() -> float:
        net.train()
        loss_sum = torch.zeros(())
        for xb, yb in loader:
            loss_sum += _hand_step(net, optimizer, xb, yb)
        return loss_sum.item() / len(tensors.y_train)

    return Variant("loader", run)


def race(variants: list[Variant], *, rounds: int) -> None:
    """Interleaved rounds (A, B, C, A, B, C, ...), one epoch each; a warm-up epoch first, not timed."""
    for variant in variants:
        torch.set_num_threads(variant.threads)
        variant.run()
    for _ in range(rounds):
        for variant in variants:
            variant.time_epoch()


def report(title: str, variants: list[Variant], *, steps: int) -> dict[str, float]:
    print(f"\n{title}")
    for v in variants:
        runs = ", ".join(f"{s:.2f}" for s in v.seconds)
        print(f"  {v.name:10s} median {v.median:7.3f} s  ({v.median / steps * 1e6:6.1f} us/step)  runs [{runs}]  "
              f"cpu {statistics.median(v.cpu):.2f} s  last train_loss {v.losses[-1]:.4f}")
    return {v.name: v.median for v in variants}


def load_line(label: str) -> str:
    one, five, fifteen = os.getloadavg()
    return f"{label}: load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)"


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


def float_copy(dataset: data.Dataset) -> DeviceData:
    """The normalised float32 copy of both splits that a trial held before issue #12 (what bare and loader read)."""
    return DeviceData(*to_tensors(dataset, dataset.x_train, dataset.y_train, device="cpu"),
                      *to_tensors(dataset, dataset.x_val, dataset.y_val, device="cpu"), dataset.num_classes)


def contestants(config: TrialConfig, model: nn.Module, *, tensors: DeviceData, floats: DeviceData,
                old: types.ModuleType | None, hand: tuple[Callable, ...]) -> list[Variant]:
    """ours (shared uint8), old (float copy) when loaded, then the hand-written loops over the float copy."""
    variants = [ours_variant(config, tensors, model)]
    if old is not None:
        variants.append(ours_variant(config, floats, model, epoch=old.train_epoch, name="old"))
    return variants + [make(config, floats, model) for make in hand]


def print_old_ratio(medians: dict[str, float], *, ours: str = "ours", old: str = "old") -> None:
    if old in medians:
        ratio = medians[ours] / medians[old]
        print(f"  {ours} / {old} = {ratio:.3f}  (issue #12 goal <= {GOAL_OLD}: {verdict(ratio <= GOAL_OLD)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"), help="holds MNIST/raw")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per variant (median reported)")
    # One thread by default: what a trial with cpu=1 (every shipped sweep) trains on, and robust on a shared machine.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the mini-batch runs")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[128, 32], help="none: batch 1 only")
    parser.add_argument("--batch1-steps", type=int, default=5000, help="training examples for the batch-1 ratio")
    parser.add_argument("--batch1-threads", type=int, nargs="+", default=[1],
                        help="torch threads for the batch-1 runs; the first also times the full epoch")
    parser.add_argument("--skip-full-batch1", action="store_true", help="skip the one full batch-1 epoch (ours)")
    parser.add_argument("--old-ref", default=OLD_REF, help="git commit of the 'old' train.py; '' to leave it out")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores")
    print(load_line("start"))
    old = load_old_train(args.old_ref) if args.old_ref else None
    dataset = data.load("mnist", data_dir=args.data_dir, download=False)
    tensors = DeviceData.from_arrays(dataset, device="cpu")
    floats = float_copy(dataset)
    print(f"MNIST: {len(tensors.y_train)} train, {len(tensors.y_val)} val images")
    ratios = {}

    for batch_size in args.batch_sizes:
        config = TrialConfig.from_dict({**MINIBATCH, "batch_size": batch_size})
        torch.manual_seed(0)
        model = build_model(config, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
        variants = contestants(config, model, tensors=tensors, floats=floats, old=old,
                               hand=(bare_variant, loader_variant))
        race(variants, rounds=args.rounds)
        medians = report(f"batch {batch_size}, SGD momentum 0.9, {torch.get_num_threads()} threads, "
                         f"{args.rounds} rounds", variants, steps=-(-len(tensors.y_train) // batch_size))
        ratios[batch_size] = (medians["ours"] / medians["bare"], medians["loader"] / medians["ours"])
        print_old_ratio(medians)
        print(f"  ours / bare   = {ratios[batch_size][0]:.3f}  (goal <= {GOAL_BARE}: "
              f"{verdict(ratios[batch_size][0] <= GOAL_BARE)})")
        print(f"  loader / ours = {ratios[batch_size][1]:.2f}x  (goal >= {GOAL_LOADER}: "
              f"{verdict(ratios[batch_size][1] >= GOAL_LOADER)})")

    # evaluate() for scale: the whole validation split in EVAL_BATCH chunks, ours and old interleaved
    torch.set_num_threads(args.threads)
    config = TrialConfig.from_dict(MINIBATCH)
    net = build_model(config, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    evaluations = {"ours": lambda: evaluate(net, tensors.x_val, tensors.y_val, normalize=tensors.normalize)}
    if old is not None:
        evaluations["old"] = lambda: old.evaluate(net, floats.x_val, floats.y_val)
    seconds: dict[str, list[float]] = {name: [] for name in evaluations}
    for _ in range(args.rounds):
        for name, run in evaluations.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    print(f"\nevaluate() on {len(tensors.y_val)} val images: median "
          + ", ".join(f"{name} {statistics.median(s) * 1e3:.1f} ms" for name, s in seconds.items()))

    config = TrialConfig.from_dict(BATCH1)
    torch.manual_seed(0)
    model = build_model(config, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    n = args.batch1_steps
    subset, float_subset = (dataclasses.replace(d, x_train=d.x_train[:n], y_train=d.y_train[:n])
                            for d in (tensors, floats))
    variants = []
    for threads in args.batch1_threads:
        torch.set_num_threads(threads)
        for variant in contestants(config, model, tensors=subset, floats=float_subset, old=old, hand=(bare_variant,)):
            variant.name += f" {threads}t"
            variants.append(variant)
    race(variants, rounds=args.rounds)
    medians = report(f"batch 1, plain SGD + L2 1e-4 on layer 1, {n} steps, threads {args.batch1_threads}, "
                     f"{args.rounds} rounds", variants, steps=n)
    for threads in args.batch1_threads:
        print_old_ratio(medians, ours=f"ours {threads}t", old=f"old {threads}t")
        ratio = medians[f"ours {threads}t"] / medians[f"bare {threads}t"]
        projected = medians[f"ours {threads}t"] / n * len(tensors.y_train)
        print(f"  {threads} thread(s): ours / bare = {ratio:.3f} (goal <= {GOAL_BARE}: {verdict(ratio <= GOAL_BARE)});"
              f" projected full epoch ({len(tensors.y_train)} steps) {projected:.1f} s "
              f"(goal <= {GOAL_BATCH1_S:.0f} s: {verdict(projected <= GOAL_BATCH1_S)})")
    if not args.skip_full_batch1:
        torch.set_num_threads(args.batch1_threads[0])
        full = ours_variant(config, tensors, model)
        full.time_epoch()
        print(f"  full batch-1 epoch ({len(tensors.y_train)} steps), ours, {full.threads} thread(s), timed once: "
              f"{full.seconds[0]:.1f} s, cpu {full.cpu[0]:.1f} s "
              f"(goal <= {GOAL_BATCH1_S:.0f} s: {verdict(full.seconds[0] <= GOAL_BATCH1_S)})")
    print()
    print(load_line("end"))


if __name__ == "__main__":
    main()
