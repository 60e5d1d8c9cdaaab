"""A conditional space two levels deep, for tests: children exist only under their option, and a child can itself be a
conditional choice (sgd -> nesterov -> momentum). TPE by default; points_to_evaluate cover three different branches."""

from raysweep.sweep import Sweep, choice, loguniform, quniform, uniform

SWEEP = Sweep(
    name="conditional",
    dataset="digits",
    fixed={"hidden": [32]},  # small: these tests never train
    space={
        "optimizer": choice({
            # Nesterov needs a momentum > 0, so momentum lives under nesterov=True only.
            "sgd": {"optimizer.nesterov": choice({False: {}, True: {"optimizer.momentum": uniform(0.5, 0.95)}})},
            "adam": {"optimizer.beta1": uniform(0.8, 0.95), "optimizer.beta2": uniform(0.9, 0.999)},
            "rmsprop": {"optimizer.rho": uniform(0.8, 0.99)},
            "adagrad": {},
        }),
        "lr": loguniform(1e-4, 1e-1),
        "batch_size": choice([16, 32, "full"]),
        "schedule": choice({
            "constant": {},
            "inverse_time": {"schedule.decay": loguniform(1e-5, 1e-2)},
            "step": {"schedule.step_size": quniform(2, 6, 1), "schedule.gamma": uniform(0.5, 0.9)},
        }),
        "regularizer": choice({
            "none": {},
            "l2": {"regularizer.alpha": loguniform(1e-5, 1e-2)},
            "elastic_net": {"regularizer.alpha": loguniform(1e-5, 1e-2), "regularizer.l1_ratio": uniform(0.0, 1.0)},
        }),
    },
    searcher="tpe",
    num_samples=60,
    max_epochs=3,
    grace_period=1,
    points_to_evaluate=[
        {"optimizer": "sgd", "optimizer.nesterov": True, "optimizer.momentum": 0.9, "lr": 0.05, "batch_size": 32,
         "schedule": "step", "schedule.step_size": 3, "schedule.gamma": 0.5, "regularizer": "none"},
        {"optimizer": "adam", "optimizer.beta1": 0.9, "optimizer.beta2": 0.999, "lr": 1e-3, "batch_size": "full",
         "schedule": "constant", "regularizer": "elastic_net", "regularizer.alpha": 1e-4, "regularizer.l1_ratio": 0.25},
        {"optimizer": "adagrad", "lr": 0.01, "batch_size": 16, "schedule": "inverse_time", "schedule.decay": 1e-3,
         "regularizer": "l2", "regularizer.alpha": 1e-3},
    ],
)
