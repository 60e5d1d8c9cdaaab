"""The regularization comparison on MNIST, the cheap twin of cifar_regularizers.py: the same regularizers, MLP,
optimizer and budget, only the data set differs (MNIST overfits later, so the curves part more slowly).

    python -m raysweep.run sweeps/mnist_regularizers.py --data-dir ../shared/data
"""

from dataclasses import replace
from pathlib import Path

from raysweep.sweep_file import load

CIFAR = load(Path(__file__).with_name("cifar_regularizers.py"))  # one list of regularizers for both studies

SWEEP = replace(CIFAR, name="mnist_regularizers", dataset="mnist")
