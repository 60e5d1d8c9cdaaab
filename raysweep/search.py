"""The searcher and the scheduler a sweep runs with on Ray Tune: HyperOpt's TPE (or its random search, sampling the
same conditional space from its prior) or Tune's grid; ASHA on the epoch count, or FIFO."""

from __future__ import annotations

from typing import Any

from raysweep.sweep import Sweep, trial_settings


def scheduler(sweep: Sweep) -> Any:
    """ASHA on the epoch count, or FIFO (every trial runs its whole budget)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if sweep.scheduler != "asha":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",  # one report per epoch
        max_t=sweep.max_epochs,
        grace_period=sweep.grace_period,
        reduction_factor=sweep.reduction_factor,
    )


def search_algorithm(sweep: Sweep) -> tuple[Any, dict[str, Any]]:
    """The Tune search algorithm for the sweep's searcher, and the param_space to pass beside it."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
    from ray.tune.search.hyperopt import HyperOptSearch

    from raysweep import space

    if sweep.searcher == "grid":  # Ray Tune's own generator walks the nested grid_search of every valid combination
        return BasicVariantGenerator(random_state=sweep.seed), {**trial_settings(sweep), **space.grid_space(sweep)}
    # Random search samples the same nested HyperOpt space from its prior (TPE that never leaves its random start-up
    # phase), so conditional children and points_to_evaluate behave exactly as they do under TPE.
    points = [space.hyperopt_point(sweep.space, p) for p in sweep.points_to_evaluate]
    startup = sweep.num_samples if sweep.searcher == "random" else min(10, max(sweep.num_samples // 4, 2))
    searcher = space.complete_points(HyperOptSearch(
        space=space.to_hyperopt(sweep.space),
        metric=sweep.metric,
        mode=sweep.mode,
        points_to_evaluate=points or None,
        n_initial_points=startup,
        random_state_seed=sweep.seed,
    ))
    if sweep.max_concurrent:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=sweep.max_concurrent)
    return searcher, trial_settings(sweep)
