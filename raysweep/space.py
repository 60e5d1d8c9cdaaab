"""A sweep's search space in the forms its searcher takes: HyperOpt's space for TPE and random search, Ray Tune's
nested grid_search for grid search (and Ray Tune domains for --dry-run's samples). Conditional children live inside
their option, so no searcher ever proposes a child without its parent.

A conditional choice comes back from every searcher as a nested dict under its name, e.g.
{"optimizer": {"optimizer": "sgd", "optimizer.momentum": 0.9}}; `sweep.flatten` turns that into flat settings.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from hyperopt import hp
from ray import tune

from raysweep.config import flatten
from raysweep.sweep import Choice, Sweep, Uniform, searched_names

if TYPE_CHECKING:
    from ray.tune.search.hyperopt import HyperOptSearch


def _label(path: str, key: str) -> str:
    # HyperOpt labels must be unique across branches, and must differ from the space's top-level keys so that Ray's
    # HyperOptSearch leaves our points_to_evaluate alone (we convert them ourselves, below).
    return f"hp:{path}{key}"


def to_hyperopt(space: dict[str, Any], *, path: str = "") -> dict[str, Any]:
    """HyperOpt space for TPE: nested hp.choice for conditional choices."""
    out: dict[str, Any] = {}
    for key, domain in space.items():
        label = _label(path, key)
        if isinstance(domain, Uniform):
            if domain.log:
                low, high = math.log(domain.low), math.log(domain.high)
                out[key] = hp.qloguniform(label, low, high, domain.q) if domain.q else hp.loguniform(label, low, high)
            else:
                low, high = domain.low, domain.high
                out[key] = hp.quniform(label, low, high, domain.q) if domain.q else hp.uniform(label, low, high)
        elif domain.conditional:
            branches = [
                {key: option, **to_hyperopt(children, path=f"{path}{key}={option}/")}
                for option, children in zip(domain.options, domain.children, strict=True)
            ]
            out[key] = hp.choice(label, branches)
        else:
            out[key] = hp.choice(label, list(domain.options))
    return out


def hyperopt_point(space: dict[str, Any], point: dict[str, Any], *, path: str = "") -> dict[str, Any]:
    """A flat config -> HyperOpt's {label: value} form, with choices as option indices (what hyperopt stores)."""
    out: dict[str, Any] = {}
    for key, domain in space.items():
        if key not in point:
            continue
        if isinstance(domain, Choice):
            index = domain.options.index(point[key])
            out[_label(path, key)] = index
            if domain.conditional:
                out |= hyperopt_point(domain.children[index], point, path=f"{path}{key}={point[key]}/")
        else:
            out[_label(path, key)] = point[key]
    return out


def complete_points(searcher: HyperOptSearch) -> HyperOptSearch:
    """Record a HyperOptSearch's points_to_evaluate as HyperOpt records its own trials; returns the same searcher.

    HyperOpt's generate_trials_to_calculate stores only the labels a point sets, and TPE looks every label up in every
    trial: the first suggestion after the start-up phase fails with a KeyError on an inactive branch's label
    (hyperopt#646). HyperOpt's own trials list an inactive label with no index and no value; so do these.
    """
    labels = list(searcher.domain.params)  # every branch's labels
    for trial in searcher._hpopt_trials.trials:  # the points, queued as HyperOpt trials not yet run
        for part in ("idxs", "vals"):
            for label in labels:
                trial["misc"][part].setdefault(label, [])
    return searcher


def to_tune(space: dict[str, Any], *, grid: bool = False) -> dict[str, Any]:
    """Ray Tune domains: grid search walks every valid combination; --dry-run samples the others."""
    out: dict[str, Any] = {}
    for key, domain in space.items():
        if isinstance(domain, Uniform):
            sampler = tune.loguniform if domain.log else tune.uniform
            if domain.q:
                sampler = tune.qloguniform if domain.log else tune.quniform
                out[key] = sampler(domain.low, domain.high, domain.q)
            else:
                out[key] = sampler(domain.low, domain.high)
            continue
        options: list[Any] = list(domain.options)
        if domain.conditional:
            options = [
                {key: option, **to_tune(children, grid=grid)}
                for option, children in zip(domain.options, domain.children, strict=True)
            ]
        out[key] = tune.grid_search(options) if grid else tune.choice(options)
    return out


def sample(sweep: Sweep, *, count: int) -> list[dict[str, Any]]:
    """A few flat trial configs the searcher could propose (grid: the first ones it will run), for --dry-run."""
    from ray.tune.search.variant_generator import generate_variants

    space = grid_space(sweep) if sweep.searcher == "grid" else to_tune(sweep.space)
    # One generator for all draws: Ray re-seeds every domain from an int seed, so each value would reuse one number.
    rng = np.random.default_rng(sweep.seed)
    configs = []
    for _ in range(count if sweep.searcher != "grid" else 1):
        for _, config in generate_variants(space, random_state=rng):
            configs.append(flatten(config))
    return configs[:count]


def grid_size(sweep: Sweep) -> int:
    """How many trials one pass of the grid runs."""
    from ray.tune.search.variant_generator import generate_variants

    return sum(1 for _ in generate_variants(grid_space(sweep)))


def grid_space(sweep: Sweep) -> dict[str, Any]:
    """The grid as Ray Tune's nested grid_search: the space's product, times the explicit trials if any."""
    grid = to_tune(sweep.space, grid=True)
    if sweep.trials:
        grid["trial"] = tune.grid_search([dict(trial) for trial in sweep.trials])  # flatten() merges it in
    return grid


__all__ = [
    "complete_points", "grid_size", "grid_space", "hyperopt_point", "sample", "searched_names", "to_hyperopt",
    "to_tune",
]
