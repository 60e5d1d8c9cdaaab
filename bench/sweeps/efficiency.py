"""The sweep that bench/sweep_efficiency.py times (issue #3): 24 trials of equal work, 2 at a time, none stopped early.

Only lr and dropout vary, and neither changes what an epoch costs, so every trial does the same work: the ideal wall
time is the sum of the trial times / 2, and anything beyond it is the engine's.

    python -m raysweep.run bench/sweeps/efficiency.py --tracking-uri sqlite:///tmp/eff/mlflow.db --storage /tmp/eff
"""

from raysweep.sweep import Sweep, loguniform, uniform

SWEEP = Sweep(
    name="bench_efficiency",
    dataset="synthetic",  # generated in memory (1,600 train / 400 validation 28x28 images): no files, no download
    fixed={
        "model": "mlp",
        "hidden": [512, 512],  # with batch 16: ~0.5 s per epoch on one core
        "batch_size": 16,
        "optimizer": "momentum",
    },
    space={
        "lr": loguniform(1e-3, 3e-2),  # low enough that no trial diverges and stops early
        "dropout": uniform(0.0, 0.3),
    },
    searcher="random",
    scheduler="none",  # every trial runs all its epochs
    num_samples=24,
    max_epochs=8,  # x ~0.6 s per epoch and its report: ~5 s per trial
    max_concurrent=2,
    cpu=1,  # one core per trial, two trials at a time on a 2-core machine
)
