"""The conditional search space as each searcher sees it: TPE through HyperOpt, random and grid through Ray Tune's
variant generator. No Ray cluster is started: the searchers are driven directly."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from ray.tune.search.hyperopt import HyperOptSearch
from ray.tune.search.variant_generator import generate_variants

from raysweep import space
from raysweep.config import TrialConfig, flatten
from raysweep.sweep import Choice, Sweep, loguniform, trial_settings, uniform
from raysweep.sweep_file import load

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CONDITIONAL = TESTS / "sweeps" / "conditional.py"
GRID = TESTS / "sweeps" / "grid_conditional.py"





# ------------------------------------------------------------------------------------------------ the conditional space
def required_keys(space_: dict, flat: dict) -> set[str]:
    """What a flat config must hold, no more: every key of the space, and the children of the options it chose."""
    keys = set()
    for key, domain in space_.items():
        keys.add(key)
        if isinstance(domain, Choice) and domain.conditional and key in flat:
            keys |= required_keys(domain.children[domain.options.index(flat[key])], flat)
    return keys


def check_config(sweep: Sweep, flat: dict) -> None:
    """A proposed config obeys the conditional rule, stays inside its domains and builds a valid TrialConfig."""
    assert set(flat) == required_keys(sweep.space, flat), flat
    domains = {}

    def collect(space_: dict) -> None:
        for key, domain in space_.items():
            domains.setdefault(key, []).append(domain)
            if isinstance(domain, Choice):
                for children in domain.children:
                    collect(children)

    collect(sweep.space)
    for key, value in flat.items():
        inside = [value in d.options if isinstance(d, Choice) else d.low <= value <= d.high for d in domains[key]]
        assert any(inside), f"{key}={value!r} is outside {domains[key]}"
    TrialConfig.from_dict({**trial_settings(sweep), **flat})


def tpe_suggestions(sweep: Sweep, *, count: int) -> list[dict]:
    """`count` flat configs from Ray's HyperOptSearch on the sweep's space, reporting random results back."""
    searcher = space.complete_points(HyperOptSearch(
        space=space.to_hyperopt(sweep.space),
        metric="val_acc",
        mode="max",
        points_to_evaluate=[space.hyperopt_point(sweep.space, p) for p in sweep.points_to_evaluate] or None,
        n_initial_points=10,  # then TPE proper for the remaining suggestions
        random_state_seed=0,
    ))
    rng = np.random.default_rng(0)
    configs = []
    for i in range(count):
        config = searcher.suggest(f"t{i}")
        configs.append(flatten(config))
        searcher.on_trial_complete(f"t{i}", {"val_acc": float(rng.uniform())})
    return configs


@pytest.fixture(scope="module")
def conditional():
    return load(CONDITIONAL)


@pytest.fixture(scope="module")
def tpe_configs(conditional):
    return tpe_suggestions(conditional, count=60)


def test_tpe_proposes_no_child_without_its_parent_option(conditional, tpe_configs):
    for flat in tpe_configs:
        check_config(conditional, flat)
        assert ("optimizer.momentum" in flat) == (flat["optimizer"] == "sgd" and flat["optimizer.nesterov"] is True)
        assert ("regularizer.l1_ratio" in flat) == (flat["regularizer"] == "elastic_net")
    # The rule was exercised on every branch, the nested one included.
    assert {flat["optimizer"] for flat in tpe_configs} == {"sgd", "adam", "rmsprop", "adagrad"}
    assert any("optimizer.momentum" in flat for flat in tpe_configs[10:])


def test_tpe_starts_with_the_points_to_evaluate_in_order_exactly(conditional, tpe_configs):
    assert tpe_configs[:3] == [dict(point) for point in conditional.points_to_evaluate]
    assert tpe_configs[3] not in tpe_configs[:3]


def test_random_search_proposes_no_child_without_its_parent_option(conditional):
    tune_space = space.to_tune(conditional.space)
    rng = np.random.default_rng(0)
    configs = [flatten(config) for _ in range(200) for _, config in generate_variants(tune_space, random_state=rng)]
    for flat in configs:
        check_config(conditional, flat)
    assert {flat["schedule"] for flat in configs} == {"constant", "inverse_time", "step"}
    assert any("optimizer.momentum" in flat for flat in configs)


def test_random_search_starts_with_the_points_to_evaluate_then_samples_the_prior(conditional):
    from raysweep.search import search_algorithm

    sweep = dataclasses.replace(conditional, searcher="random", num_samples=40, max_concurrent=0)
    searcher, param_space = search_algorithm(sweep)
    assert param_space == trial_settings(sweep)
    configs = [flatten(searcher.suggest(f"t{i}")) for i in range(40)]
    assert configs[:3] == list(conditional.points_to_evaluate)
    for flat in configs:
        check_config(sweep, flat)
    assert len({repr(sorted_items(c)) for c in configs[3:]}) == 37  # fresh draws, no repeats


def test_grid_walks_exactly_the_valid_combinations():
    sweep = load(GRID)
    configs = [flatten(config) for _, config in generate_variants(space.to_tune(sweep.space, grid=True))]
    expected = [
        {"optimizer": optimizer, child: value, "lr": lr}
        for optimizer, child, values in (("sgd", "optimizer.momentum", (0.5, 0.9)), ("adam", "optimizer.beta1", (0.9,)))
        for value in values
        for lr in (0.1, 0.01)
    ]
    assert len(configs) == len(expected) == 6
    assert sorted(map(repr, map(sorted_items, configs))) == sorted(map(repr, map(sorted_items, expected)))
    assert space.grid_size(sweep) == 6
    for flat in configs:
        check_config(sweep, flat)


def sorted_items(config: dict) -> list:
    return sorted(config.items())


def test_dry_run_samples_are_valid_trial_configs(conditional):
    for sweep in (conditional, load(GRID)):
        samples = space.sample(sweep, count=3)
        assert len(samples) == 3 and len({repr(sorted_items(s)) for s in samples}) == 3
        for flat in samples:
            check_config(sweep, flat)


def test_dry_run_samples_draw_each_setting_independently():
    # Two domains with the same bounds: drawn from one stream they differ; re-seeded per domain they would be equal.
    sweep = Sweep(name="s", space={"lr": loguniform(1e-4, 1e-1), "regularizer.alpha": loguniform(1e-4, 1e-1),
                                   "dropout": uniform(0.0, 0.5), "optimizer.momentum": uniform(0.0, 0.5)})
    for flat in space.sample(sweep, count=3):
        assert not math.isclose(flat["lr"], flat["regularizer.alpha"])
        assert not math.isclose(flat["dropout"], flat["optimizer.momentum"])
