"""Repeats: N seeds of one configuration in lockstep equal N separate runs, seed by seed, and their mean and
standard deviation are those of the seeds' numbers."""

import math

import numpy as np
import pytest

from raysweep import data
from raysweep.config import TrialConfig
from raysweep.seeds import aggregate, run_seeds, seed_configs
from raysweep.train import run_trial


@pytest.fixture(scope="module")
def synthetic():
    return data.load("synthetic", subset=300)


# Dropout draws masks from torch's global generator every step: lockstep seeds must not share it.
CONFIG = TrialConfig.from_dict({"hidden": [32], "dropout": 0.3, "optimizer": "adam", "lr": 3e-3, "batch_size": 32,
                                "max_epochs": 3, "seed": 5})


def separate(config: TrialConfig, dataset) -> list[dict]:
    return [metrics for metrics, _ in run_trial(config, dataset)]


def test_each_seed_in_lockstep_equals_a_separate_run_with_that_seed(synthetic):
    lockstep = list(run_seeds(CONFIG, synthetic, repeats=3))
    assert len(lockstep) == 3  # epochs
    for i, config in enumerate(seed_configs(CONFIG, repeats=3)):
        alone = separate(config, synthetic)
        for epoch, (_, per_seed, _) in enumerate(lockstep):
            ours, theirs = per_seed[i], alone[epoch]
            assert (ours["val_acc"], ours["val_loss"], ours["train_loss"]) == (
                theirs["val_acc"], theirs["val_loss"], theirs["train_loss"]), f"seed {config.seed} epoch {epoch + 1}"
    first_epoch_losses = {per_seed[i]["train_loss"] for i, per_seed in enumerate([lockstep[0][1]] * 3)}
    assert len(first_epoch_losses) == 3  # the seeds really differ


def test_the_seeds_are_consecutive_from_the_configurations_seed():
    assert [c.seed for c in seed_configs(CONFIG, repeats=4)] == [5, 6, 7, 8]


def test_the_mean_and_sample_standard_deviation_are_the_seeds():
    per_seed = [{"val_acc": 0.5, "diverged": False, "epoch": 2}, {"val_acc": 0.7, "diverged": True, "epoch": 2},
                {"val_acc": 0.9, "diverged": False, "epoch": 2}]
    merged = aggregate(per_seed)
    assert merged["val_acc"] == pytest.approx(0.7)
    assert merged["val_acc_std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1)) == pytest.approx(0.2)
    assert merged["diverged"] is True and merged["seeds"] == 3 and merged["epoch"] == 2
    assert aggregate(per_seed[:1])["val_acc_std"] == 0.0


def test_all_seeds_stop_when_one_stops(synthetic):
    # Seed 6 alone stops early (patience 1 with a tiny min_delta that only some curves meet) or not at all: whatever
    # the seeds do, the configuration stops at the first epoch where any seed stopped.
    config = TrialConfig.from_dict({**CONFIG.to_dict(), "patience": 1, "min_delta": 0.05, "max_epochs": 6})
    alone = [separate(c, synthetic) for c in seed_configs(config, repeats=2)]
    first_stop = min(len(curve) for curve in alone)
    lockstep = list(run_seeds(config, synthetic, repeats=2))
    assert len(lockstep) == first_stop < 6
    assert all(math.isfinite(mean["val_acc"]) for mean, _, _ in lockstep)


def test_a_resumed_configuration_continues_every_seed_exactly(synthetic):
    whole = list(run_seeds(CONFIG, synthetic, repeats=2))
    first = next(run_seeds(CONFIG, synthetic, repeats=2))
    resumed = list(run_seeds(CONFIG, synthetic, repeats=2, states=first[2]))
    assert [m["val_acc"] for m, _, _ in resumed] == [m["val_acc"] for m, _, _ in whole[1:]]
