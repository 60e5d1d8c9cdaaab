"""The regularization comparison on MNIST, the cheap twin of cifar_regularizers.py: each regularizer alone on the same
MLP and optimizer, long enough for the unregularized model to overfit (training accuracy climbs, validation loss turns
up).

    python -m raysweep.run sweeps/mnist_regularizers.py --data-dir ../shared/data
"""

from raysweep.sweep import Sweep

REGULARIZERS = [
    {"regularizer": "none"},
    {"regularizer": "l2", "regularizer.alpha": 2e-4},  # = Keras l2(1e-4)
    {"regularizer": "l1", "regularizer.alpha": 1e-5},
    {"regularizer": "elastic_net", "regularizer.alpha": 1e-4, "regularizer.l1_ratio": 0.5},
    {"dropout": 0.2},
    {"dropout": 0.3},
    {"dropout": 0.5},
    {"batch_norm": [1]},  # after the first hidden layer
    {"batch_norm": [2]},  # after the second
    {"patience": 3},  # early stopping on validation loss
]

SWEEP = Sweep(
    name="mnist_regularizers",
    dataset="mnist",
    fixed={
        "model": "mlp",
        "hidden": [512, 256],  # 784-512-256-10: MNIST overfits more slowly; the curves still part
        "optimizer": "adam",
        "lr": 1e-3,
        "batch_size": 128,
    },
    searcher="grid",
    trials=REGULARIZERS,
    scheduler="none",  # a comparison: every regularizer gets the same budget (early stopping ends its own run)
    max_epochs=15,
    num_samples=1,
    cpu=1,
)
