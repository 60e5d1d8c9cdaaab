"""Trial labels: short and unique, from what varies; the leaders of a column with ties listed together."""

import math

import pandas as pd

from raysweep import labels


def test_label_trials_leads_with_the_optimizer_and_formats_numbers_short():
    params = pd.DataFrame({"optimizer": ["adam", "sgd", "sgd"], "lr": ["0.001", "0.01", "0.0003"],
                           "optimizer.momentum": [None, "0.9", "0.9"], "hidden": ["128", "128", "128"]})
    assert labels.label_trials(params) == ["adam lr=1e-3", "sgd lr=0.01 momentum=0.9", "sgd lr=3e-4 momentum=0.9"]


def test_label_trials_numbers_repeated_labels():
    params = pd.DataFrame({"optimizer": ["adam", "adam", "sgd", "adam"], "seed": [1, 1, 1, 1]})
    assert labels.label_trials(params) == ["adam", "adam #2", "sgd", "adam #3"]


def test_leaders_lists_ties_together_and_skips_missing_values():
    values = pd.Series([0.9, 0.9, 0.5, math.nan], index=["adam", "rmsprop", "sgd", "failed"])
    assert labels.leaders(values) == "adam, rmsprop (0.9000)"
    assert labels.leaders(values, highest=False, fmt="{:.1f}") == "sgd (0.5)"
    assert labels.leaders(values[["failed"]]) == "no trial (no values)"


def test_numbered_makes_repeats_unique_in_order():
    assert labels.numbered(["adam", "sgd", "adam", "adam"]) == ["adam", "sgd", "adam #2", "adam #3"]
