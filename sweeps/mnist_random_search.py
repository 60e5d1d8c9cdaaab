"""Random search over batch size, dropout rate and learning rate on MNIST, as one seed did by hand.
That seed found {batch 128, dropout 0.21, lr 0.032}.

    python -m raysweep.run sweeps/mnist_random_search.py --data-dir ../shared/data
"""

from raysweep.sweep import Sweep, choice, loguniform, uniform

SWEEP = Sweep(
    name="mnist_random_search",
    dataset="mnist",  # validation: the first 5,000 training images
    fixed={
        "model": "mlp",
        "hidden": [300, 100],
        "optimizer": "momentum",  # SGD with momentum 0.9: the seed's best optimizer
    },
    space={
        "batch_size": choice([32, 64, 128, 256]),
        "dropout": uniform(0.0, 0.5),
        "lr": loguniform(1e-3, 1e-1),
    },
    searcher="random",  # what the seed did; try --set searcher=tpe to compare
    scheduler="asha",
    grace_period=2,
    num_samples=20,
    max_epochs=10,
    cpu=1,
)
