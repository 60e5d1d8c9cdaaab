"""Repeats: one configuration trained with N seeds (seed, seed+1, ...) in lockstep inside one trial.

The searcher and ASHA see the mean over the seeds of every metric at each epoch; the record also keeps each seed's
own curve. Seeds differ in initialisation, dropout masks and data order; the data split is the sweep's and does not.

Each seed's numbers equal a separate run with that seed: the seeds take turns, one epoch each, and every seed keeps
its own torch random state between its turns (train.run_trial draws initialisation and dropout masks from torch's
global generator, and its data order from a generator of its own). All seeds stop together: at the first epoch after
which any seed stops (it diverged, or its early stopping fired), or at max_epochs, or when ASHA stops the trial.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from raysweep.train import run_trial

if TYPE_CHECKING:
    from raysweep.config import TrialConfig
    from raysweep.data import Dataset

# Per-epoch keys that are flags, not measurements: the configuration's flag is set when any seed's is.
FLAGS = ("diverged", "early_stopped")


def seed_configs(config: TrialConfig, *, repeats: int) -> list[TrialConfig]:
    """The configuration once per seed: seed, seed + 1, ..., seed + repeats - 1."""
    return [dataclasses.replace(config, seed=config.seed + i) for i in range(repeats)]


def aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One epoch's metrics of every seed -> their mean under the same names, the sample standard deviation as
    `<name>_std` (0 for one seed), the flags OR-ed, and `seeds` = the count."""
    merged: dict[str, Any] = {"seeds": len(per_seed)}
    for key in per_seed[0]:
        values = [m[key] for m in per_seed]
        if key in FLAGS:
            merged[key] = any(values)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            mean = math.fsum(values) / len(values)
            merged[key] = mean
            if len(values) > 1:
                merged[f"{key}_std"] = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
            else:
                merged[f"{key}_std"] = 0.0
        else:
            merged[key] = values[0]
    return merged


def run_seeds(
    config: TrialConfig, data: Dataset, *, repeats: int, device: torch.device | str = "cpu",
    states: list[dict] | None = None,
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]], list[dict]]]:
    """Train every seed one epoch at a time, yielding (mean metrics, each seed's metrics, each seed's state).

    `states` resumes every seed from a checkpoint holding all of them (as the trainable saves it)."""
    configs = seed_configs(config, repeats=repeats)
    runs = [run_trial(c, data, device=device, state=None if states is None else states[i])
            for i, c in enumerate(configs)]
    # Each seed's torch random state between its turns; None: the seed has not started (run_trial seeds it itself).
    rng: list[tuple | None] = [None] * repeats
    while True:
        per_seed, seed_states = [], []
        for i, run in enumerate(runs):
            if rng[i] is not None:
                _set_rng(rng[i], device=device)
            step = next(run, None)
            rng[i] = _get_rng(device=device)
            if step is None:  # this seed had reached max_epochs
                return
            per_seed.append(step[0])
            seed_states.append(step[1])
        yield aggregate(per_seed), per_seed, seed_states
        if any(m["diverged"] or m["early_stopped"] for m in per_seed):
            return


def _get_rng(*, device: torch.device | str) -> tuple:
    """torch's global random state, and the GPU's when the seeds train there (dropout masks come from it)."""
    cuda = torch.device(device).type == "cuda"
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if cuda else None


def _set_rng(saved: tuple, *, device: torch.device | str) -> None:
    torch.set_rng_state(saved[0])
    if saved[1] is not None:
        torch.cuda.set_rng_state(saved[1], device)
