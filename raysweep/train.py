"""One trial's training: train_epoch() and evaluate() over tensors on the trial's device, and run_trial(), the loop
that yields each epoch's metrics and state. raysweep.trainable wraps it for Ray Tune.

The data lives on the device as normalised float tensors for the whole trial; a batch is an index slice of a per-epoch
permutation, so the hot loop has no DataLoader, no collation and no host-to-device copies.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raysweep.config import TrialConfig
from raysweep.models import build_model
from raysweep.optim import build_optimizer, lr_at, steps_per_epoch
from raysweep.regularize import EarlyStopping, Penalty, build_penalty

if TYPE_CHECKING:
    from raysweep.data import Dataset

__all__ = ["DeviceData", "evaluate", "run_trial", "to_tensors", "train_epoch"]

# Diverged: the mean training cross-entropy is NaN, inf, or this many times chance level (ln C: 2.3 for 10 classes).
# A model that merely learns nothing sits near 1x; one whose weights blew up lands far above 10x and stays there.
DIVERGED_LOSS_X_CHANCE = 10.0
DIVERGENCE_CHECK_STEPS = 64  # look at the loss this often: each look syncs a GPU, so not every step
FULL_BATCH_CHUNK = 8192  # batch GD accumulates gradients over chunks of this many examples to bound memory
EVAL_BATCH = 4096


@dataclass(frozen=True)
class DeviceData:
    """Normalised float images (N, C, H, W) and int64 labels on one device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int

    @classmethod
    def from_arrays(cls, data: Dataset, *, device: torch.device | str) -> DeviceData:
        """From a data set (uint8 arrays + per-channel mean/std), normalised once per trial."""
        return cls(*to_tensors(data, data.x_train, data.y_train, device=device),
                   *to_tensors(data, data.x_val, data.y_val, device=device), data.num_classes)


def to_tensors(data: Dataset, x: np.ndarray, y: np.ndarray, *, device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """uint8 images (N, C, H, W) -> float tensors normalised by the data set's training statistics; labels -> int64."""
    mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
    # The object store hands out read-only arrays; torch.tensor copies them onto the device.
    images = (torch.tensor(np.asarray(x), device=device).float().div_(255.0) - mean) / std
    return images, torch.tensor(np.asarray(y), device=device).long()


def _forward_backward(
    model: nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    *,
    config: TrialConfig,
    penalty: Penalty | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Backpropagate scale x (cross-entropy [+ recon_weight x MSE]) [+ penalty] of one batch.

    `scale` is the batch's share of a batch-GD step split into chunks, so the chunks' gradients add up to the whole
    batch's mean. The penalty is a property of the weights, not of the examples: it is never scaled, and the caller
    passes it for one chunk of a step only.
    Returns the batch's summed cross-entropy, its logits (B, classes) and its summed reconstruction MSE, as tensors, so
    the caller accumulates without a device sync.
    """
    logits, recon = model.training_outputs(xb)  # (B, classes), (B, C, H, W) or None
    loss = F.cross_entropy(logits, yb)
    objective = loss
    recon_sum = None
    if recon is not None:
        recon_loss = F.mse_loss(recon, xb)
        objective = objective + config.recon_weight * recon_loss
        recon_sum = recon_loss.detach() * len(yb)
    if scale != 1.0:
        objective = objective * scale
    by_hand = penalty is not None and _penalty_by_hand(penalty)
    if penalty is not None and not by_hand:
        objective = objective + penalty()
    objective.backward()
    if by_hand:
        _add_penalty_gradient(penalty)
    return loss.detach() * len(yb), logits, recon_sum


def _penalty_by_hand(penalty: Penalty) -> bool:
    """Can the penalty's gradient be added after backward, bit for bit as autograd would add it?

    Yes for pure L1 or L2. Autograd's gradient then is fl(alpha * sgn(w)) or, through pow's backward
    (alpha/2) * (2w), fl(alpha * w): the factors of 2 are exact while alpha/2 is a normal float32. Adding it to w.grad
    is one sum, as in autograd. Through autograd the L2 term costs about 7 passes over each weight per step (forward
    pow and sum, backward pow, 2x, x grad, then the sum): most of an SGD step at batch size 1. Elastic net adds three
    terms in an order autograd picks, so it stays in autograd.
    """
    return penalty.l1_ratio in (0.0, 1.0) and penalty.alpha > 1e-30


def _add_penalty_gradient(penalty: Penalty) -> None:
    for w in penalty.weights:
        # sgn, not sign: autograd's abs backward; mul by a Python float: the float32 product autograd computes.
        gradient = torch.mul(w.detach().sgn() if penalty.l1_ratio == 1.0 else w.detach(), penalty.alpha)
        if w.grad is None:
            w.grad = gradient
        else:
            w.grad.add_(gradient)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DeviceData,
    *,
    config: TrialConfig,
    penalty: Penalty | None,
    first_step: int,
    generator: torch.Generator,
) -> dict[str, Any]:
    """One pass over the training split.

    Returns train_loss (mean cross-entropy), train_acc, lr (of the last step), steps (the step count after this
    epoch), diverged, and recon_loss for an autoencoder.
    """
    model.train()
    x, y = data.x_train, data.y_train
    n = len(y)
    per_epoch = steps_per_epoch(config, num_train=n)
    diverged_loss = DIVERGED_LOSS_X_CHANCE * math.log(data.num_classes)
    full_batch = config.batch_size == "full"
    batch = n if full_batch else config.batch_size
    # Batch GD adds up the gradients of bounded chunks into the full-split gradient: one step per epoch.
    chunk = FULL_BATCH_CHUNK if full_batch else batch
    order = torch.randperm(n, generator=generator).to(x.device)
    # Each step writes its argmaxes here (one op); accuracy is counted once at the end against y in `order`.
    predicted = torch.empty(n, dtype=torch.long, device=x.device)
    loss_sum = torch.zeros((), device=x.device)
    recon_sum = torch.zeros((), device=x.device)
    step, seen, diverged = first_step, 0, False
    for start in range(0, n, batch):
        idx = order[start : start + batch]
        optimizer.zero_grad(set_to_none=True)
        for offset in range(0, len(idx), chunk):
            part = idx[offset : offset + chunk] if len(idx) > chunk else idx
            # index_select, not x[part]: same rows, a fraction of advanced indexing's cost on (B, C, H, W).
            # The objective is mean CE (+ recon) over the whole step + the penalty once: each chunk carries its share
            # of the mean, and the first chunk alone carries the penalty, unscaled.
            losses, logits, recons = _forward_backward(
                model,
                x.index_select(0, part),
                y.index_select(0, part),
                config=config,
                penalty=penalty if offset == 0 else None,
                scale=len(part) / len(idx),
            )
            first = start + offset
            torch.argmax(logits, dim=1, out=predicted[first : first + len(part)])
            loss_sum += losses
            if recons is not None:
                recon_sum += recons
        lr = lr_at(config, step=step, steps_per_epoch=per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        step += 1
        seen += len(idx)
        # NaN fails the comparison too. Checked every few steps only: each check syncs a GPU.
        if (step % DIVERGENCE_CHECK_STEPS == 0 or seen == n) and not loss_sum.item() / seen < diverged_loss:
            diverged = True
            break
    correct = (predicted[:seen] == y.index_select(0, order[:seen])).sum()
    metrics = {
        "train_loss": loss_sum.item() / seen,
        "train_acc": correct.item() / seen,
        "lr": lr,
        "steps": step,
        "diverged": diverged,
    }
    if recon_sum.item() > 0:
        metrics["recon_loss"] = recon_sum.item() / seen
    return metrics


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, prefix: str = "val") -> dict[str, float]:
    """Mean cross-entropy and accuracy (and reconstruction MSE for an autoencoder) on one split."""
    model.eval()
    loss_sum, correct, recon_sum = 0.0, 0, 0.0
    for start in range(0, len(y), EVAL_BATCH):
        xb, yb = x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]
        logits, recon = model.training_outputs(xb)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(dim=1) == yb).sum().item()
        if recon is not None:
            recon_sum += F.mse_loss(recon, xb, reduction="sum").item() / xb[0].numel()
    metrics = {f"{prefix}_loss": loss_sum / len(y), f"{prefix}_acc": correct / len(y)}
    if recon_sum:
        metrics[f"{prefix}_recon_loss"] = recon_sum / len(y)
    return metrics


def run_trial(
    config: TrialConfig,
    data: Dataset,
    *,
    device: torch.device | str = "cpu",
    state: dict | None = None,
) -> Iterator[tuple[dict[str, Any], dict]]:
    """Train epoch by epoch, yielding (metrics, state) after each; `state` resumes from a checkpoint's state."""
    # data -> device tensors
    tensors = DeviceData.from_arrays(data, device=device)
    # model, optimizer, penalty, early stopping: all seeded, so one config and seed give one result on the CPU
    torch.manual_seed(config.seed)
    model = build_model(config, input_shape=data.input_shape, num_classes=data.num_classes).to(device)
    optimizer = build_optimizer(model.parameters(), config)
    penalty = build_penalty(model, config)
    stopper = EarlyStopping(patience=config.patience, min_delta=config.min_delta)
    generator = torch.Generator().manual_seed(config.seed)
    epoch, step = 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        stopper = EarlyStopping(**state["early_stopping"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        epoch, step = state["epoch"], state["step"]

    while epoch < config.max_epochs:
        epoch += 1
        started = time.perf_counter()
        metrics = train_epoch(
            model, optimizer, tensors, config=config, penalty=penalty, first_step=step, generator=generator
        )
        step = metrics.pop("steps")
        metrics |= evaluate(model, tensors.x_val, tensors.y_val)
        metrics["diverged"] = metrics["diverged"] or not math.isfinite(metrics["val_loss"])
        metrics["early_stopped"] = not metrics["diverged"] and stopper.should_stop(metrics["val_loss"])
        metrics["epoch"] = epoch
        metrics["epoch_time_s"] = time.perf_counter() - started
        state = {  # copies: the caller may keep it while training goes on
            "model": copy.deepcopy(model.state_dict()),
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "early_stopping": vars(stopper).copy(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": epoch,
            "step": step,
        }
        yield metrics, state
        if metrics["diverged"] or metrics["early_stopped"]:
            return
