"""Penalties follow scikit-learn's elastic-net convention; early stopping counts epochs without improvement."""

import pytest
import torch

from raysweep.config import TrialConfig
from raysweep.models import build_model
from raysweep.regularize import EarlyStopping, build_penalty


def model_and_penalty(**values):
    config = TrialConfig.from_dict({"hidden": [4], "regularizer.alpha": 0.1, **values})
    model = build_model(config, input_shape=(1, 2, 2), num_classes=3)
    return model, build_penalty(model, config)


def test_elastic_net_uses_sklearn_convention_on_all_weight_matrices():
    model, penalty = model_and_penalty(regularizer="elastic_net", **{"regularizer.l1_ratio": 0.3})
    weights = [model.layers[1].weight, model.layers[-1].weight]
    l1 = sum(w.abs().sum() for w in weights)
    l2 = sum(w.pow(2).sum() for w in weights)
    assert penalty().item() == pytest.approx((0.1 * (0.3 * l1 + 0.7 / 2 * l2)).item(), rel=1e-5)


@pytest.mark.parametrize("name,ratio", [("l1", 1.0), ("l2", 0.0)])
def test_l1_and_l2_are_elastic_net_with_fixed_ratio(name, ratio):
    _, penalty = model_and_penalty(regularizer=name, **{"regularizer.l1_ratio": 0.5})
    assert penalty.l1_ratio == ratio


@pytest.mark.parametrize("layers,index", [("last", -1), ("first", 1)])
def test_penalty_can_target_one_layer(layers, index):
    model, penalty = model_and_penalty(regularizer="l2", **{"regularizer.layers": layers})
    assert len(penalty.weights) == 1
    assert penalty.weights[0] is model.layers[index].weight


def test_no_regularizer_means_no_penalty_term():
    assert model_and_penalty(regularizer="none")[1] is None


def test_penalty_gradient_shrinks_weights():
    model, penalty = model_and_penalty(regularizer="l2")
    penalty().backward()
    w = model.layers[1].weight
    assert torch.allclose(w.grad, 0.1 * w)  # d/dw of alpha/2 |w|^2


def test_early_stopping_fires_after_patience_epochs_without_improvement():
    stopper = EarlyStopping(patience=2, min_delta=0.01)
    decisions = [stopper.should_stop(loss) for loss in [1.0, 0.9, 0.895, 0.899, 0.5]]
    assert decisions == [False, False, False, True, False]


def test_patience_zero_never_stops():
    stopper = EarlyStopping(patience=0)
    assert not any(stopper.should_stop(1.0) for _ in range(10))
