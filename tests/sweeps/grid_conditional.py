"""Grid search over a conditional space, for tests: (sgd x momentum {0.5, 0.9} + adam x beta1 {0.9}) x lr {0.1, 0.01}
is exactly 6 trials, and no child ever appears under the other optimizer."""

from raysweep.sweep import Sweep, choice

SWEEP = Sweep(
    name="grid_conditional",
    dataset="digits",
    fixed={"hidden": [32]},
    space={
        "optimizer": choice({
            "sgd": {"optimizer.momentum": choice([0.5, 0.9])},
            "adam": {"optimizer.beta1": choice([0.9])},
        }),
        "lr": choice([0.1, 0.01]),
    },
    searcher="grid",
    scheduler="none",  # a grid is small and every point matters: run each to the end
    num_samples=1,  # one pass of the grid
    max_epochs=2,
)
