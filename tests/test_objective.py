"""The step train_epoch takes follows the gradient of the documented objective, in every batch mode.

The objective of one batch B: mean cross-entropy over B + recon_weight x MSE over B (autoencoder) + the penalty
alpha x (l1_ratio |w|_1 + (1 - l1_ratio)/2 |w|_2^2), once and unscaled. The reference below recomputes it from scratch
with torch.autograd.grad, on the whole batch at once, so batch GD's chunking cannot hide in it.
"""

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from raysweep import train
from raysweep.config import TrialConfig
from raysweep.models import build_model
from raysweep.optim import build_optimizer
from raysweep.regularize import build_penalty

N = 60  # training examples: three chunks of CHUNK and a short last one
CHUNK = 16
SHAPE = (1, 8, 8)
CLASSES = 10
ALPHA = 0.05  # large enough that a penalty gradient at a third of its strength is far outside float tolerance
L1_RATIO = 0.3
RECON_WEIGHT = 0.5
SEED = 7  # of the epoch's permutation


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(train, "FULL_BATCH_CHUNK", CHUNK)


@pytest.fixture(scope="module")
def tensors():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, CLASSES, (N,), generator=g)
    x = torch.randn((N, *SHAPE), generator=g)
    return train.DeviceData(x, y, x[:10], y[:10], CLASSES)


def make(model, regularizer, layers, batch_size, **extra):
    # No dropout and no batch norm: the reference's forward must be the very function train_epoch differentiates.
    return TrialConfig.from_dict({
        "model": model, "hidden": [16], "latent_dim": 8, "channels": [4, 8], "recon_weight": RECON_WEIGHT,
        "batch_size": batch_size, "regularizer": regularizer, "regularizer.alpha": ALPHA,
        "regularizer.l1_ratio": L1_RATIO, "regularizer.layers": layers, "lr": 1.0, **extra,
    })


class GradientRecorder(torch.optim.SGD):
    """Keeps a copy of the gradient at every step and leaves the weights alone, so all steps see the same weights."""

    def __init__(self, params):
        super().__init__(params, lr=1.0)
        self.steps = []

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"]]
        self.steps.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params])


def penalized(model, layers):
    """The weights the penalty covers, found from the modules rather than through raysweep.regularize."""
    if layers == "all":
        return [m.weight for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d)]
    head = model.head if hasattr(model, "head") else model
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return [linears[0].weight if layers == "first" else linears[-1].weight]


def reference_gradient(model, x, y, config):
    logits, recon = model.training_outputs(x)
    objective = F.cross_entropy(logits, y)
    if recon is not None:
        objective = objective + RECON_WEIGHT * F.mse_loss(recon, x)
    if config.regularizer != "none":
        ratio = {"l1": 1.0, "l2": 0.0}.get(config.regularizer, L1_RATIO)
        weights = penalized(model, config.regularizer_layers)
        size = sum(ratio * w.abs().sum() + (1 - ratio) / 2 * w.pow(2).sum() for w in weights)
        objective = objective + ALPHA * size
    return torch.autograd.grad(objective, list(model.parameters()))


def built(config):
    torch.manual_seed(1)
    model = build_model(config, input_shape=SHAPE, num_classes=CLASSES)
    return model, build_penalty(model, config)


def batches(batch_size):
    order = torch.randperm(N, generator=torch.Generator().manual_seed(SEED))
    size = N if batch_size == "full" else batch_size
    return [order[start : start + size] for start in range(0, N, size)]


CASES = list(itertools.product(
    ["mlp", "cae_mlp"], ["none", "l1", "l2", "elastic_net"], ["all", "first", "last"], [1, 32, "full"]
))


@pytest.mark.parametrize("model_name,regularizer,layers,batch_size", CASES)
def test_every_step_follows_the_gradient_of_the_documented_objective(
    tensors, model_name, regularizer, layers, batch_size
):
    config = make(model_name, regularizer, layers, batch_size)
    model, penalty = built(config)
    recorder = GradientRecorder(model.parameters())
    train.train_epoch(model, recorder, tensors, config=config, penalty=penalty, first_step=0,
                      generator=torch.Generator().manual_seed(SEED))
    expected = batches(batch_size)
    assert len(recorder.steps) == len(expected)
    # Batch size 1 takes 60 steps at the same weights; a spread of them says as much as all of them.
    picked = range(len(expected)) if len(expected) <= 8 else [0, 1, 29, len(expected) - 1]
    for step in picked:
        idx = expected[step]
        reference = reference_gradient(model, tensors.x_train[idx], tensors.y_train[idx], config)
        for name_and_param, got, want in zip(model.named_parameters(), recorder.steps[step], reference, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=lambda m, n=name_and_param[0]: f"{n}: {m}")


@pytest.mark.parametrize("regularizer", ["l1", "l2", "elastic_net"])
def test_one_batch_gd_step_moves_the_weights_by_minus_lr_times_the_gradient(tensors, regularizer):
    config = make("mlp", regularizer, "all", "full")
    model, penalty = built(config)
    before = copy.deepcopy(model)
    want = reference_gradient(before, tensors.x_train, tensors.y_train, config)
    optimizer = build_optimizer(model.parameters(), config)  # plain SGD, lr 1, constant
    metrics = train.train_epoch(model, optimizer, tensors, config=config, penalty=penalty, first_step=0,
                                generator=torch.Generator().manual_seed(SEED))
    assert metrics["steps"] == 1
    for old, new, grad in zip(before.parameters(), model.parameters(), want, strict=True):
        torch.testing.assert_close(old.detach() - new.detach(), grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("regularizer", ["l1", "l2"])
def test_the_penalty_gradient_added_by_hand_equals_autograds_bit_for_bit(regularizer):
    config = make("cae_mlp", regularizer, "all", 32, **{"regularizer.alpha": 3e-4})
    model, penalty = built(config)
    assert train._penalty_by_hand(penalty)
    want = torch.autograd.grad(penalty(), penalty.weights)
    train._add_penalty_gradient(penalty)
    for w, grad in zip(penalty.weights, want, strict=True):
        assert torch.equal(w.grad, grad)


def test_elastic_net_goes_through_autograd():
    config = make("mlp", "elastic_net", "all", 32)
    assert not train._penalty_by_hand(built(config)[1])
