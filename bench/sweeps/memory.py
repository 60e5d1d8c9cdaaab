"""bench/memory.py's sweep: a small MLP, two trials side by side, run once on digits and once on CIFAR-10.

The data set (and the epochs: a digits epoch lasts a fraction of a second, too short to sample) come from the command
line; everything else is the same for both, so the difference in a trial's private memory is the data's.

    python -m raysweep.run bench/sweeps/memory.py --set dataset='"cifar10"' --data-dir ../shared/data
"""

from raysweep.sweep import Sweep, loguniform

SWEEP = Sweep(
    name="bench_memory",
    dataset="digits",
    fixed={"model": "mlp", "hidden": [128], "batch_size": 128, "optimizer": "adam"},
    space={"lr": loguniform(1e-4, 1e-3)},  # low: no trial diverges and stops before it is sampled
    searcher="random",
    scheduler="none",
    num_samples=2,
    max_epochs=1,
    cpu=1,  # two trials at a time on a 2-core machine, as the study's sweeps run
    seed=0,
)
