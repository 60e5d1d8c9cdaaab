"""Quickstart: TPE + ASHA over optimizers, learning rate and regularizers on scikit-learn's digits (offline, ~1 min).

    python -m raysweep.run sweeps/quickstart.py
"""

from raysweep.sweep import Sweep, choice, loguniform, uniform

SWEEP = Sweep(
    name="quickstart",
    dataset="digits",  # bundled with scikit-learn: runs offline, 1,438 train / 359 validation images of 8x8
    fixed={"model": "mlp", "hidden": [128], "batch_size": 32},
    space={
        # Each optimizer brings its own children: TPE never proposes a momentum for adam.
        "optimizer": choice({
            "sgd": {"optimizer.momentum": uniform(0.0, 0.95)},
            "adam": {"optimizer.beta1": uniform(0.8, 0.95)},
            "rmsprop": {"optimizer.rho": uniform(0.8, 0.99)},
        }),
        "lr": loguniform(1e-4, 1e-1),
        "regularizer": choice({
            "none": {},
            "l2": {"regularizer.alpha": loguniform(1e-5, 1e-2)},
            "elastic_net": {"regularizer.alpha": loguniform(1e-5, 1e-2), "regularizer.l1_ratio": uniform(0.0, 1.0)},
        }),
        "dropout": uniform(0.0, 0.5),
    },
    searcher="tpe",
    scheduler="asha",
    grace_period=2,  # epochs: on 1,438 images one epoch is too noisy to judge a trial by
    reduction_factor=3,
    num_samples=20,
    max_epochs=12,
    cpu=1,  # two trials at a time on a 2-core laptop
    # A known-good config first: TPE then has a strong trial to model from the start.
    points_to_evaluate=[
        {"optimizer": "adam", "optimizer.beta1": 0.9, "lr": 1e-3, "regularizer": "none", "dropout": 0.0},
    ],
)
