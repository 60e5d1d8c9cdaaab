"""What a sweep file imports: the Sweep dataclass and the search-space helpers (choice, uniform, loguniform, quniform).

A sweep file is a plain Python module that defines `SWEEP = Sweep(...)`. Its search space maps trial settings to
domains. A `choice` given a dict is conditional: each option carries the child parameters that exist only under it,

    space={"optimizer": choice({"sgd": {"optimizer.momentum": uniform(0.0, 0.99)}, "adam": {}}), "lr": loguniform(...)}

and the same space becomes HyperOpt's nested hp.choice (TPE), Ray Tune domains (random) or nested grid_search (grid).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Sweep", "SweepError", "choice", "loguniform", "quniform", "uniform"]


class SweepError(ValueError):
    """A sweep file, an override or an option breaks a rule. One line: the field, the rule, the value."""


@dataclass(frozen=True)
class Uniform:
    """A number in [low, high]; on a log scale if `log`; rounded to a multiple of `q` if given."""

    low: float
    high: float
    log: bool = False
    q: float | None = None


@dataclass(frozen=True)
class Choice:
    """One of `options`. `children[i]` is the sub-space that exists only when options[i] is chosen."""

    options: tuple
    children: tuple[dict[str, Any], ...] = ()

    @property
    def conditional(self) -> bool:
        return any(self.children)


def uniform(low: float, high: float, *, q: float | None = None) -> Uniform:
    return Uniform(low, high, q=q)


def loguniform(low: float, high: float, *, q: float | None = None) -> Uniform:
    return Uniform(low, high, log=True, q=q)


def quniform(low: float, high: float, q: float) -> Uniform:
    return Uniform(low, high, q=q)


def choice(options: list | tuple | dict[Any, dict[str, Any]]) -> Choice:
    """choice([a, b]) or, conditional, choice({a: {child: domain, ...}, b: {}})."""
    if isinstance(options, dict):
        return Choice(tuple(options), tuple(dict(sub or {}) for sub in options.values()))
    return Choice(tuple(options))


SEARCHERS = ("tpe", "random", "grid")
SCHEDULERS = ("asha", "none")
METRICS = {"val_acc": "max", "val_loss": "min", "train_acc": "max", "train_loss": "min"}


@dataclass(frozen=True)
class Sweep:
    name: str
    dataset: str = "digits"
    fixed: dict[str, Any] = field(default_factory=dict)  # trial settings every trial shares
    space: dict[str, Any] = field(default_factory=dict)  # trial settings searched: setting -> domain
    searcher: str = "tpe"
    scheduler: str = "asha"
    grace_period: int = 1  # epochs every trial runs before ASHA may stop it
    reduction_factor: int = 3  # ASHA keeps the top 1/reduction_factor at each rung
    metric: str = "val_acc"
    mode: str = "max"
    num_samples: int = 20  # trials (for grid: repeats of the whole grid)
    max_epochs: int = 10  # per trial; ASHA's max_t
    max_concurrent: int = 0  # 0: as many as the resources allow
    cpu: float = 1.0  # per trial
    gpu: float | str = "auto"  # per trial, at most 1; "auto": a quarter GPU where the cluster has GPUs, else none
    seed: int = 0  # seeds the searcher and every trial
    repeats: int = 1  # seeds per configuration (seed, seed + 1, ...): the searcher and ASHA see their mean
    points_to_evaluate: tuple[dict[str, Any], ...] = ()  # flat configs tried first (tpe, random)
    # Grid search over named cases instead of (or times) a product: each dict is one trial's settings beyond `fixed`,
    # e.g. the optimizer study's "batch GD", "SGD batch 1", "Adam" rows.
    trials: tuple[dict[str, Any], ...] = ()
    val_size: int | float | None = None  # None: the data set's default (MNIST, CIFAR-10: the first 5,000)
    val_pick: str = "first"
    subset: int | None = None  # first N training examples, for quick runs

    def to_dict(self) -> dict[str, Any]:
        """The resolved sweep as plain data: printed by --dry-run, logged to MLflow."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "space"}
        return {**fields, "space": {key: domain_text(domain) for key, domain in self.space.items()}}


def trial_settings(sweep: Sweep) -> dict[str, Any]:
    """What every trial's config holds besides the searched values."""
    return {**sweep.fixed, "max_epochs": sweep.max_epochs, "seed": sweep.seed}


def _searched_names(space: dict[str, Any]) -> list[str]:
    names = []
    for key, domain in space.items():
        names.append(key)
        if isinstance(domain, Choice):
            for children in domain.children:
                names += _searched_names(children)
    return names


def searched_names(sweep: Sweep) -> list[str]:
    """Every setting the space can vary, children included, in order (not counting explicit `trials`)."""
    return list(dict.fromkeys(_searched_names(sweep.space)))


def varied_names(sweep: Sweep) -> list[str]:
    """Every setting that can differ between trials: the space's and the explicit trials'."""
    return list(dict.fromkeys(searched_names(sweep) + [key for trial in sweep.trials for key in trial]))


def domain_text(domain: Any) -> str:
    """A domain as it reads in a sweep file, for printing and for MLflow params."""
    if isinstance(domain, Uniform):
        kind = "loguniform" if domain.log else "uniform"
        return f"{kind}({domain.low:g}, {domain.high:g}" + (f", q={domain.q:g})" if domain.q else ")")
    if isinstance(domain, Choice) and domain.conditional:
        parts = [f"{o!r}: {{{', '.join(f'{k!r}: {domain_text(v)}' for k, v in c.items())}}}"
                 for o, c in zip(domain.options, domain.children, strict=True)]
        return "choice({" + ", ".join(parts) + "})"
    if isinstance(domain, Choice):
        return f"choice({list(domain.options)!r})"
    return repr(domain)


def is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
