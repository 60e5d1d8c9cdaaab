"""Optimizers, learning-rate schedules and batch modes.

The study's optimizers are named as the study names them: `momentum` and `nesterov` are SGD with momentum 0.9 (or
`optimizer.momentum`), so "SGD vs momentum vs Nesterov" is one categorical choice. The batch mode follows from the
batch size: 1 is stochastic, N is mini-batch, "full" is batch GD over the whole training split.

Schedules are pure functions of the optimizer step, applied by setting the lr before each step: that is exactly
Keras' `decay` (inverse time, per step), which the seeds used.

The optimizers are torch's own classes with their torch.compile guards taken off (`eager`): the same code and state,
without importing torch._dynamo (1-5 s) in every new trial worker.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

import torch

if TYPE_CHECKING:
    from raysweep.config import TrialConfig

Params = Iterable[torch.nn.Parameter]
OptimizerClass = TypeVar("OptimizerClass", bound=type[torch.optim.Optimizer])


def eager(cls: OptimizerClass) -> OptimizerClass:
    """`cls` with the wrappers torch puts around its methods for torch.compile unwrapped.

    Each torch.optim optimizer imports torch._dynamo on its first construction or step (a guard that keeps
    torch.compile from tracing into it), 1-5 s in a fresh process: the first epoch of every new trial worker paid it.
    Trials never compile, so the subclass calls the undecorated methods: the same arithmetic and state dicts, the
    same grad mode for step (torch's own wrapper sets it from `defaults["differentiable"]`), and step hooks and
    profiling as before (Optimizer.__init__ wraps this class's step like any other's)."""
    methods = {name: inspect.unwrap(getattr(cls, name))
               for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict")}
    step = inspect.unwrap(cls.step)

    def eager_step(self: torch.optim.Optimizer, closure: Callable[[], float] | None = None) -> float | None:
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return step(self, closure)

    return type(cls.__name__, (cls,), {**methods, "step": eager_step, "__doc__": cls.__doc__,
                                       "__module__": __name__, "__qualname__": cls.__name__})


SGD, Adam, AdamW, RMSprop, Adagrad = map(eager, (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW,
                                                  torch.optim.RMSprop, torch.optim.Adagrad))


def _sgd(params: Params, config: TrialConfig, *, momentum: float = 0.0, nesterov: bool = False) -> torch.optim.SGD:
    nesterov = nesterov or config.optimizer_nesterov
    if config.optimizer_momentum is not None:
        momentum = config.optimizer_momentum
    elif nesterov:
        momentum = 0.9  # Nesterov needs momentum; sgd with optimizer.nesterov=True gets the same default as "nesterov"
    return SGD(
        params,
        lr=config.lr,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=config.weight_decay,
        foreach=True,  # one fused op per step instead of one per tensor: matters at batch size 1
    )


def _adam(params: Params, config: TrialConfig, *, decoupled: bool = False) -> torch.optim.Optimizer:
    kind = AdamW if decoupled else Adam
    return kind(
        params,
        lr=config.lr,
        betas=(config.optimizer_beta1, config.optimizer_beta2),
        eps=config.optimizer_eps,
        weight_decay=config.weight_decay,
        foreach=True,
    )


def _rmsprop(params: Params, config: TrialConfig) -> torch.optim.Optimizer:
    return RMSprop(
        params,
        lr=config.lr,
        alpha=config.optimizer_rho,
        eps=config.optimizer_eps,
        momentum=config.optimizer_momentum or 0.0,
        weight_decay=config.weight_decay,
        foreach=True,
    )


def _adagrad(params: Params, config: TrialConfig) -> torch.optim.Optimizer:
    return Adagrad(
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
