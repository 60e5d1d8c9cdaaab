"""Every model x optimizer x regularizer: shapes, one step lowers the loss, no NaN."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from raysweep.config import ConfigError, TrialConfig
from raysweep.models import MODELS, BatchNorm1dAnySize, build_model
from raysweep.optim import OPTIMIZERS, build_optimizer
from raysweep.regularize import REGULARIZERS, build_penalty

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]


def batch(shape, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.randn((n, *shape), generator=g) + (y.view(-1, 1, 1, 1) - 4.5) / 45  # standardised; mean ~ label
    return x, y


@pytest.mark.parametrize("model,shape", list(itertools.product(sorted(MODELS), SHAPES)))
def test_model_outputs_logits_and_reconstruction_of_the_right_shape(model, shape):
    config = TrialConfig.from_dict({"model": model, "hidden": [32, 16], "batch_norm": [1], "dropout": 0.2})
    net = build_model(config, input_shape=shape, num_classes=10)
    x, _ = batch(shape, n=5)
    logits, recon = net.training_outputs(x)
    assert logits.shape == (5, 10)
    assert net(x).shape == (5, 10)
    if model == "cae_mlp":
        assert recon.shape == x.shape
    else:
        assert recon is None


@pytest.mark.parametrize(
    "model,optimizer,regularizer", list(itertools.product(sorted(MODELS), sorted(OPTIMIZERS), sorted(REGULARIZERS)))
)
def test_one_step_lowers_the_loss_without_nan(model, optimizer, regularizer):
    # Adaptive optimizers take a sign-like first step of size lr on every weight: keep it small.
    lr = 0.01 if optimizer in ("sgd", "momentum", "nesterov") else 1e-4
    config = TrialConfig.from_dict(
        {"model": model, "optimizer": optimizer, "lr": lr, "regularizer": regularizer, "hidden": [32], "seed": 1}
    )
    torch.manual_seed(1)
    net = build_model(config, input_shape=(1, 28, 28), num_classes=10)
    opt = build_optimizer(net.parameters(), config)
    penalty = build_penalty(net, config)
    x, y = batch((1, 28, 28))
    net.eval()  # deterministic forward, so before/after compare the same function

    def objective():
        logits, recon = net.training_outputs(x)
        value = F.cross_entropy(logits, y)
        if recon is not None:
            value = value + F.mse_loss(recon, x)
        return value + (penalty() if penalty is not None else 0.0)

    before = objective()
    opt.zero_grad()
    before.backward()
    opt.step()
    after = objective()
    assert torch.isfinite(after)
    assert after.item() < before.item()


def test_unknown_model_error_lists_the_valid_names():
    with pytest.raises(ConfigError, match=r"^`model` must be one of \['cae_mlp', 'mlp'\], but got model='nope'$"):
        TrialConfig.from_dict({"model": "nope"})


def test_batch_norm_trains_on_a_batch_of_one():
    bn = BatchNorm1dAnySize(4).train()
    out = bn(torch.randn(1, 4))
    assert out.shape == (1, 4) and torch.isfinite(out).all()


def test_layer_options_place_batch_norm_and_dropout_after_the_named_hidden_layers():
    config = TrialConfig.from_dict({"hidden": [300, 100], "batch_norm": [1], "dropout": 0.2, "dropout_after": [2]})
    net = build_model(config, input_shape=(1, 28, 28), num_classes=10)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["Flatten", "Linear", "ReLU", "BatchNorm1dAnySize", "Linear", "ReLU", "Dropout", "Linear"]
    assert [layer.out_features for layer in net.classifier_layers()] == [300, 100, 10]


@pytest.mark.parametrize("init", ["he", "xavier"])
def test_init_scheme_sets_zero_biases_and_scaled_weights(init):
    config = TrialConfig.from_dict({"hidden": [400], "init": init})
    first = build_model(config, input_shape=(1, 28, 28), num_classes=10).classifier_layers()[0]
    assert torch.count_nonzero(first.bias) == 0
    expected = (2 / 784) ** 0.5 if init == "he" else (2 / (784 + 400)) ** 0.5
    assert first.weight.std().item() == pytest.approx(expected, rel=0.05)
