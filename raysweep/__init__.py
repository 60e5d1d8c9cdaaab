"""raysweep: hyperparameter sweeps of small PyTorch classifiers on Ray Tune, recorded in MLflow."""

__version__ = "0.1.0"
