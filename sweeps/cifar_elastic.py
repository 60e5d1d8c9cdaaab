"""The headline sweep: TPE + ASHA over a conv autoencoder with a 400-unit MLP head on CIFAR-10, elastic net on the
last layer only. The seed's figures to beat: 20 TPE trials in 44 min reached 0.2806 test accuracy; a grid 0.3917.

    python -m raysweep.run sweeps/cifar_elastic.py --data-dir ../shared/data
"""

from raysweep.sweep import Sweep, choice, loguniform, uniform

SWEEP = Sweep(
    name="cifar_elastic",
    dataset="cifar10",  # validation: the first 5,000 training images, as the seeds did
    fixed={
        "model": "cae_mlp",
        "hidden": [400],  # the seeds' CAE_MLP400 head
        "batch_norm": [1],
        "channels": [32, 64],  # two stride-2 convs: 32x32 -> 8x8 codes
        "latent_dim": 128,
        "recon_weight": 1.0,
        "optimizer": "adam",
        "regularizer": "elastic_net",
        "regularizer.layers": "last",  # the seed put elastic net on the last layer alone
    },
    space={
        "batch_size": choice([32, 64, 128, 256]),
        "lr": loguniform(1e-4, 1e-2),
        "regularizer.alpha": loguniform(1e-6, 1e-2),
        "regularizer.l1_ratio": uniform(0.0, 1.0),
    },
    searcher="tpe",
    scheduler="asha",
    grace_period=1,  # one CIFAR epoch (~45 s on a CPU core) already separates good lr from bad
    reduction_factor=3,
    num_samples=20,
    max_epochs=4,  # 4 epochs reach ~0.6 val acc; the ASHA rungs are at 1 and 3 epochs
    cpu=1,  # two trials at once on a 2-core machine; on GPU nodes gpu="auto" (the default) packs 4 per GPU
    points_to_evaluate=[{"batch_size": 128, "lr": 1e-3, "regularizer.alpha": 1e-4, "regularizer.l1_ratio": 0.5}],
)
