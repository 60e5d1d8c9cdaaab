"""Weight penalties (L1, L2, elastic net) and early stopping. Dropout and batch norm live in the models.

All three penalties follow scikit-learn's elastic-net convention,
    alpha * (l1_ratio * |w|_1 + (1 - l1_ratio) / 2 * |w|_2^2),
with l1_ratio fixed at 1 for L1 and 0 for L2, so one `alpha` means the same thing across the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from raysweep.config import TrialConfig

# regularizer name -> its fixed l1_ratio (None: taken from `regularizer.l1_ratio`).
REGULARIZERS: dict[str, float | None] = {"none": 0.0, "l1": 1.0, "l2": 0.0, "elastic_net": None}
PENALTY_LAYERS = ("all", "first", "last")


def penalized_weights(model: nn.Module, *, layers: str) -> list[torch.Tensor]:
    """The weight tensors a penalty applies to.

    "all": every weight matrix and conv kernel (never biases or batch-norm scales); "first" / "last": the first or
    the output Linear layer of the classifier (the seeds put elastic net on the last layer alone).
    """
    if layers == "all":
        return [p for name, p in model.named_parameters() if p.ndim > 1 and name.endswith("weight")]
    linears = model.classifier_layers()
    return [linears[0].weight if layers == "first" else linears[-1].weight]


@dataclass(frozen=True)
class Penalty:
    weights: list[torch.Tensor]
    alpha: float
    l1_ratio: float

    def __call__(self) -> torch.Tensor:
        total = torch.zeros((), device=self.weights[0].device)
        for w in self.weights:
            if self.l1_ratio > 0:
                total = total + self.l1_ratio * w.abs().sum()
            if self.l1_ratio < 1:
                total = total + (1.0 - self.l1_ratio) / 2.0 * w.pow(2).sum()
        return self.alpha * total


def build_penalty(model: nn.Module, config: TrialConfig) -> Penalty | None:
    """The config's penalty term for the loss, or None when the trial has none."""
    if config.regularizer == "none" or config.regularizer_alpha == 0:
        return None
    l1_ratio = REGULARIZERS[config.regularizer]
    return Penalty(
        weights=penalized_weights(model, layers=config.regularizer_layers),
        alpha=config.regularizer_alpha,
        l1_ratio=config.regularizer_l1_ratio if l1_ratio is None else l1_ratio,
    )


@dataclass
class EarlyStopping:
    """Stops when the validation loss has not improved by more than `min_delta` for `patience` epochs.

    patience=0 turns it off. The state is plain numbers so it goes into the trial's checkpoint.
    """

    patience: int
    min_delta: float = 0.0
    best: float = float("inf")
    bad_epochs: int = 0

    def should_stop(self, val_loss: float) -> bool:
        if val_loss < self.best - self.min_delta:
            self.best, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
        return self.patience > 0 and self.bad_epochs >= self.patience
