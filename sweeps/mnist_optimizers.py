"""The optimizer comparison on MNIST: one trial per optimizer of the study, same model, 5 epochs each.
The seeds' 5-epoch validation accuracies to beat: SGD+momentum 0.9828, Adam 0.9774, RMSprop 0.9756.

    python -m raysweep.run sweeps/mnist_optimizers.py --data-dir ../shared/data
"""

from raysweep.sweep import Sweep

DECAY = 1e-4  # inverse-time decay per step (Keras' `decay`): lr halves after 10,000 steps, about 6 epochs of batch 32

SWEEP = Sweep(
    name="mnist_optimizers",
    dataset="mnist",  # validation: the first 5,000 training images, as the seeds did
    fixed={
        "model": "mlp",
        "hidden": [300, 100],  # 784-300-100-10
        "batch_norm": [1],  # after the first hidden layer
        "dropout": 0.2,
        "dropout_after": [2],  # after the second
        "regularizer": "l2",
        "regularizer.alpha": 2e-4,  # alpha/2 |w|^2 here equals Keras' l2(1e-4) = 1e-4 |w|^2
        "regularizer.layers": "first",
    },
    searcher="grid",
    trials=[
        {"optimizer": "sgd", "lr": 0.01, "batch_size": "full"},  # batch GD: one step per epoch
        {"optimizer": "sgd", "lr": 0.01, "batch_size": 1},  # stochastic: 55,000 steps per epoch
        {"optimizer": "sgd", "lr": 0.01, "batch_size": 32},  # mini-batch
        {"optimizer": "sgd", "lr": 0.01, "batch_size": 32, "schedule": "inverse_time", "schedule.decay": DECAY},
        {"optimizer": "momentum", "lr": 0.01, "batch_size": 32, "schedule": "inverse_time", "schedule.decay": DECAY},
        {"optimizer": "nesterov", "lr": 0.01, "batch_size": 32, "schedule": "inverse_time", "schedule.decay": DECAY},
        {"optimizer": "adam", "lr": 1e-3, "batch_size": 32},
        {"optimizer": "rmsprop", "lr": 1e-3, "batch_size": 32, "optimizer.rho": 0.9},
        {"optimizer": "adagrad", "lr": 0.01, "batch_size": 32},
    ],
    scheduler="none",  # a comparison: every optimizer gets its full 5 epochs
    max_epochs=5,
    num_samples=1,
    cpu=1,
)
