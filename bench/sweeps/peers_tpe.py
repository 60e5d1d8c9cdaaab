"""raysweep's side of bench/peers.py: an MLP version of cifar_elastic's search, TPE without early stopping.

The MLP (3072-400-10, batch norm after the hidden layer) keeps the three-way comparison fair and affordable on 2 cores:
the peers build the same network by hand. No ASHA and no early stopping, so every approach trains every trial for the
full budget and the wall times compare the machinery, not the scheduler.

    python -m raysweep.run bench/sweeps/peers_tpe.py --data-dir ../shared/data
"""

from raysweep.sweep import Sweep, choice, loguniform, uniform

SWEEP = Sweep(
    name="peers_tpe",
    dataset="cifar10",  # validation: the first 5,000 training images, as in the peers
    fixed={
        "model": "mlp",
        "hidden": [400],
        "batch_norm": [1],
        "optimizer": "adam",
        "regularizer": "elastic_net",
        "regularizer.layers": "last",  # elastic net on the output layer alone, as the seed did
    },
    space={
        "batch_size": choice([64, 128, 256]),
        "lr": loguniform(1e-4, 1e-2),
        "regularizer.alpha": loguniform(1e-6, 1e-2),
        "regularizer.l1_ratio": uniform(0.0, 1.0),
    },
    searcher="tpe",  # 12 trials -> 3 random start-up points, as the peers are configured too
    scheduler="none",  # the peers have no early stopping: equal epochs for all three
    num_samples=12,
    max_epochs=3,
    cpu=1,  # two trials at a time on 2 cores
    seed=0,
)
