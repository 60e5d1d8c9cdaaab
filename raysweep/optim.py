"""Optimizers, learning-rate schedules and batch modes.

The study's optimizers are named as the study names them: `momentum` and `nesterov` are SGD with momentum 0.9 (or
`optimizer.momentum`), so "SGD vs momentum vs Nesterov" is one categorical choice. The batch mode follows from the
batch size: 1 is stochastic, N is mini-batch, "full" is batch GD over the whole training split.

Schedules are pure functions of the optimizer step, applied by setting the lr before each step: that is exactly
Keras' `decay` (inverse time, per step), which the seeds used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from raysweep.config import TrialConfig

Params = Iterable[torch.nn.Parameter]


def _sgd(params: Params, config: TrialConfig, *, momentum: float = 0.0, nesterov: bool = False) -> torch.optim.SGD:
    nesterov = nesterov or config.optimizer_nesterov
    if config.optimizer_momentum is not None:
        momentum = config.optimizer_momentum
    elif nesterov:
        momentum = 0.9  # Nesterov needs momentum; sgd with optimizer.nesterov=True gets the same default as "nesterov"
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=config.weight_decay,
        foreach=True,  # one fused op per step instead of one per tensor: matters at batch size 1
    )


def _adam(params: Params, config: TrialConfig, *, decoupled: bool = False) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    return kind(
        params,
        lr=config.lr,
        betas=(config.optimizer_beta1, config.optimizer_beta2),
        eps=config.optimizer_eps,
        weight_decay=config.weight_decay,
        foreach=True,
    )


def _rmsprop(params: Params, config: TrialConfig) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(
        params,
        lr=config.lr,
        alpha=config.optimizer_rho,
        eps=config.optimizer_eps,
        momentum=config.optimizer_momentum or 0.0,
        weight_decay=config.weight_decay,
        foreach=True,
    )


def _adagrad(params: Params, config: TrialConfig) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(
        params, lr=config.lr, eps=config.optimizer_eps, weight_decay=config.weight_decay, foreach=True
    )


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "momentum": lambda params, config: _sgd(params, config, momentum=0.9),
    "nesterov": lambda params, config: _sgd(params, config, momentum=0.9, nesterov=True),
    "adam": _adam,
    "adamw": lambda params, config: _adam(params, config, decoupled=True),
    "rmsprop": _rmsprop,
    "adagrad": _adagrad,
}


def build_optimizer(params: Params, config: TrialConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS[config.optimizer](params, config)


# Each schedule maps (config, step, steps_per_epoch) to a multiplier of the base lr. step counts optimizer steps from 0.
Schedule = Callable[["TrialConfig", int, int], float]

SCHEDULES: dict[str, Schedule] = {
    "constant": lambda config, step, per_epoch: 1.0,
    # Keras' `decay`: lr / (1 + decay * iterations).
    "inverse_time": lambda config, step, per_epoch: 1.0 / (1.0 + config.schedule_decay * step),
    # Smooth per-epoch decay: gamma per epoch, applied continuously.
    "exponential": lambda config, step, per_epoch: config.schedule_gamma ** (step / per_epoch),
    # gamma every `schedule.step_size` epochs.
    "step": lambda config, step, per_epoch: config.schedule_gamma ** (step // (per_epoch * config.schedule_step_size)),
    # Cosine from lr to 0 over the trial's whole epoch budget.
    "cosine": lambda config, step, per_epoch: 0.5 * (1.0 + math.cos(math.pi * step / (per_epoch * config.max_epochs))),
}


def lr_at(config: TrialConfig, *, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimizer step `step` (0-based)."""
    return config.lr * SCHEDULES[config.schedule](config, step, steps_per_epoch)


def steps_per_epoch(config: TrialConfig, *, num_train: int) -> int:
    """Optimizer steps in one epoch: one for batch GD, else one per (possibly short last) batch."""
    if config.batch_size == "full":
        return 1
    return math.ceil(num_train / config.batch_size)
