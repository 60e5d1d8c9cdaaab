"""The searcher and the scheduler built for a sweep: what Tune is handed for each choice of the Sweep fields."""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.hyperopt import HyperOptSearch

from raysweep import search
from raysweep.sweep import Sweep, choice, loguniform, trial_settings


def sweep(**fields) -> Sweep:
    return Sweep(**{"name": "s", "dataset": "digits", "space": {"lr": loguniform(1e-4, 1e-1)}, "num_samples": 8,
                    "max_epochs": 9} | fields)


def test_asha_stops_on_the_epoch_count_with_the_sweeps_grace_period_and_reduction_factor():
    asha = search.scheduler(sweep(scheduler="asha", grace_period=2, reduction_factor=3))
    assert isinstance(asha, ASHAScheduler)
    assert (asha._time_attr, asha._max_t) == ("training_iteration", 9)
    # ASHA's rungs: the epochs where trials are compared, grace_period x reduction_factor^k below max_t
    assert sorted(milestone for milestone, _ in asha._brackets[0]._rungs) == [2, 6]


def test_without_asha_every_trial_runs_its_whole_budget():
    assert isinstance(search.scheduler(sweep(scheduler="none")), FIFOScheduler)


def test_tpe_is_hyperopt_behind_a_concurrency_limit_only_when_one_is_set():
    searcher, param_space = search.search_algorithm(sweep(searcher="tpe"))
    assert isinstance(searcher, HyperOptSearch) and param_space == trial_settings(sweep())
    limited, _ = search.search_algorithm(sweep(searcher="tpe", max_concurrent=2))
    assert isinstance(limited, ConcurrencyLimiter) and limited.max_concurrent == 2


def test_tpe_starts_with_random_trials_a_quarter_of_the_budget_between_2_and_10():
    def startup(**fields) -> int:  # HyperOpt's TPE holds it as its n_startup_jobs
        return search.search_algorithm(sweep(**fields))[0].algo.keywords["n_startup_jobs"]

    assert [startup(num_samples=n) for n in (4, 20, 100)] == [2, 5, 10]
    assert startup(searcher="random", num_samples=30) == 30


def test_grid_is_tunes_own_generator():
    generator, param_space = search.search_algorithm(sweep(searcher="grid", space={"lr": choice([0.1, 0.01])}))
    assert isinstance(generator, BasicVariantGenerator)
    assert param_space["lr"] == {"grid_search": [0.1, 0.01]}
