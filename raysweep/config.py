"""TrialConfig: the typed, frozen form of one trial's settings, built from Tune's flat config dict.

Tune hands a trial a flat dict whose conditional children carry their parent's name: `optimizer.momentum`,
`regularizer.l1_ratio`, `schedule.decay`. Those become the fields `optimizer_momentum`, ... here. A misspelt key, a
wrong type or an out-of-range value fails at once with a one-line message naming the key and the rule.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from raysweep.models import ACTIVATIONS, INITS, MODELS
from raysweep.optim import OPTIMIZERS, SCHEDULES
from raysweep.regularize import PENALTY_LAYERS, REGULARIZERS


class ConfigError(ValueError):
    """A trial setting breaks a rule. The message is one line: the key, the rule, the value."""


@dataclass(frozen=True)
class TrialConfig:
    # model
    model: str = "mlp"
    hidden: tuple[int, ...] = (128,)  # widths of the MLP's (or the head's) hidden layers
    activation: str = "relu"
    init: str = "he"
    batch_norm: tuple[int, ...] = ()  # hidden layers (numbered from 1) followed by batch norm
    dropout: float = 0.0
    dropout_after: tuple[int, ...] | None = None  # hidden layers followed by dropout; None: all of them
    latent_dim: int = 64  # cae_mlp: size of the code the head classifies
    channels: tuple[int, ...] = (32, 64)  # cae_mlp: encoder conv widths
    recon_weight: float = 1.0  # cae_mlp: loss = cross-entropy + recon_weight * reconstruction MSE
    # optimizer
    optimizer: str = "sgd"
    lr: float = 0.01
    batch_size: int | str = 32  # 1: stochastic, N: mini-batch, "full": batch GD
    optimizer_momentum: float | None = None  # None: 0.9 for momentum / Nesterov, 0 for plain sgd
    optimizer_nesterov: bool = False
    optimizer_beta1: float = 0.9
    optimizer_beta2: float = 0.999
    optimizer_eps: float = 1e-7  # Keras' default, which the seeds used
    optimizer_rho: float = 0.9  # RMSprop's moving-average factor (torch calls it alpha); Keras' default
    weight_decay: float = 0.0  # decoupled for adamw, coupled L2 for the others (torch's semantics)
    schedule: str = "constant"
    schedule_decay: float = 0.0  # inverse_time: lr / (1 + decay * step)
    schedule_gamma: float = 0.95  # exponential, step: factor per epoch / per step_size epochs
    schedule_step_size: int = 10  # step: epochs between lr drops
    # regularizer
    regularizer: str = "none"
    regularizer_alpha: float = 1e-4
    regularizer_l1_ratio: float = 0.5
    regularizer_layers: str = "all"
    patience: int = 0  # early stopping on val_loss after this many epochs without improvement; 0: off
    min_delta: float = 0.0
    # budget
    max_epochs: int = 10
    seed: int = 0

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrialConfig:
        """From Tune's config: flat, or nested under a conditional choice's name (flattened first)."""
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in flatten(values).items():
            name = key.replace(".", "_")
            if name not in hints:
                valid = ", ".join(field_key(f.name) for f in dataclasses.fields(cls))
                raise ConfigError(f"unknown trial setting `{key}`; valid settings: {valid}")
            kwargs[name] = _coerce(key, value, hints[name])
        config = cls(**kwargs)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """The flat, dotted form that Tune and MLflow see."""
        return {field_key(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}

    def validate(self) -> None:
        for name, (holds, rule) in RULES.items():
            value = getattr(self, name)
            if not holds(value, self):
                raise ConfigError(f"`{field_key(name)}` must be {rule}, but got {field_key(name)}={value!r}")
        nesterov = self.optimizer == "nesterov" or (self.optimizer == "sgd" and self.optimizer_nesterov)
        if nesterov and self.optimizer_momentum is not None and self.optimizer_momentum <= 0:
            raise ConfigError(f"`optimizer.momentum` must be > 0 for Nesterov momentum, but got "
                              f"optimizer.momentum={self.optimizer_momentum!r}")


def flatten(config: Mapping[str, Any]) -> dict[str, Any]:
    """Tune's config of a trial -> the flat settings it trains with: a conditional choice's dict merges in."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value))
        else:
            flat[key] = value
    return flat


_NAMESPACES = ("optimizer_", "schedule_", "regularizer_")


def field_key(name: str) -> str:
    """Field name -> the flat key Tune uses: optimizer_momentum -> optimizer.momentum."""
    for prefix in _NAMESPACES:
        if name.startswith(prefix):
            return prefix[:-1] + "." + name[len(prefix) :]
    return name


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Accept what samplers produce (32.0 for an int, a list for a tuple), reject anything else."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and not isinstance(value, bool):
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if typing.get_origin(option) is tuple and isinstance(value, list | tuple) and all(map(_is_whole, value)):
            return tuple(int(v) for v in value)
    expected = " or ".join("None" if o is type(None) else getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"`{key}` must be of type {expected}, but got {key}={value!r}")


def _is_whole(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()


def _one_of(names: Any) -> tuple[Callable[[Any, TrialConfig], bool], str]:
    return (lambda value, config: value in names), f"one of {sorted(names)}"


def _hidden_layer_numbers(value: tuple[int, ...] | None, config: TrialConfig) -> bool:
    return value is None or all(1 <= n <= len(config.hidden) for n in value)


RULES: dict[str, tuple[Callable[[Any, TrialConfig], bool], str]] = {
    "model": _one_of(MODELS),
    "activation": _one_of(ACTIVATIONS),
    "init": _one_of(INITS),
    "optimizer": _one_of(OPTIMIZERS),
    "schedule": _one_of(SCHEDULES),
    "regularizer": _one_of(REGULARIZERS),
    "regularizer_layers": _one_of(PENALTY_LAYERS),
    "hidden": (lambda v, c: len(v) > 0 and all(w >= 1 for w in v), "a non-empty list of widths >= 1"),
    "batch_norm": (_hidden_layer_numbers, "hidden layer numbers between 1 and len(hidden)"),
    "dropout_after": (_hidden_layer_numbers, "hidden layer numbers between 1 and len(hidden)"),
    "channels": (lambda v, c: len(v) > 0 and all(w >= 1 for w in v), "a non-empty list of conv widths >= 1"),
    "dropout": (lambda v, c: 0.0 <= v < 1.0, "in [0, 1)"),
    "latent_dim": (lambda v, c: v >= 1, ">= 1"),
    "recon_weight": (lambda v, c: v >= 0, ">= 0"),
    "lr": (lambda v, c: v > 0 and math.isfinite(v), "> 0 and finite"),
    "batch_size": (lambda v, c: v == "full" or (isinstance(v, int) and v >= 1), 'an integer >= 1 or "full"'),
    "optimizer_momentum": (lambda v, c: v is None or 0.0 <= v < 1.0, "in [0, 1)"),
    "optimizer_beta1": (lambda v, c: 0.0 <= v < 1.0, "in [0, 1)"),
    "optimizer_beta2": (lambda v, c: 0.0 <= v < 1.0, "in [0, 1)"),
    "optimizer_eps": (lambda v, c: v > 0, "> 0"),
    "optimizer_rho": (lambda v, c: 0.0 < v < 1.0, "in (0, 1)"),
    "weight_decay": (lambda v, c: v >= 0, ">= 0"),
    "schedule_decay": (lambda v, c: v >= 0, ">= 0"),
    "schedule_gamma": (lambda v, c: 0.0 < v <= 1.0, "in (0, 1]"),
    "schedule_step_size": (lambda v, c: v >= 1, ">= 1 (epochs)"),
    "regularizer_alpha": (lambda v, c: v >= 0, ">= 0"),
    "regularizer_l1_ratio": (lambda v, c: 0.0 <= v <= 1.0, "in [0, 1]"),
    "patience": (lambda v, c: v >= 0, ">= 0 (epochs; 0 turns early stopping off)"),
    "min_delta": (lambda v, c: v >= 0, ">= 0"),
    "max_epochs": (lambda v, c: v >= 1, ">= 1"),
}
