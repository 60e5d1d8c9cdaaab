"""The full grid that bench/peers.py measures ASHA's saving against: 4 lr x 3 alpha x 2 batch sizes = 24 configs.

Same MLP and data as peers_tpe.py; every config trains for all 9 epochs (ASHA's max_t in peers_asha.py), so the grid's
best val_acc is the target and 24 x 9 = 216 epochs the cost ASHA+TPE is measured against.

    python -m raysweep.run bench/sweeps/peers_grid.py --data-dir ../shared/data
"""

from raysweep.sweep import Sweep, choice

FIXED = {
    "model": "mlp",
    "hidden": [400],
    "batch_norm": [1],
    "optimizer": "adam",
    "regularizer": "elastic_net",
    "regularizer.layers": "last",
    "regularizer.l1_ratio": 0.5,  # pinned: a fourth grid axis would double the grid's cost
}
SPACE = {
    "lr": choice([1e-4, 3e-4, 1e-3, 3e-3]),
    "regularizer.alpha": choice([1e-6, 1e-4, 1e-2]),
    "batch_size": choice([128, 256]),  # the two fastest of the TPE space's sizes: the grid is the costly part
}

SWEEP = Sweep(
    name="peers_grid",
    dataset="cifar10",
    fixed=FIXED,
    space=SPACE,
    searcher="grid",
    scheduler="none",
    num_samples=1,  # one pass over the grid
    max_epochs=9,  # ASHA's rungs at 1, 3 and 9 epochs with reduction factor 3
    cpu=1,
    seed=0,
)
