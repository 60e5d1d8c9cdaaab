"""Optimizer names, batch modes and learning-rate schedules."""

import pytest
import torch

from raysweep.config import TrialConfig
from raysweep.optim import build_optimizer, lr_at, steps_per_epoch


def make(**values):
    return TrialConfig.from_dict(values)


@pytest.mark.parametrize(
    "name,kind,momentum,nesterov",
    [("sgd", torch.optim.SGD, 0.0, False), ("momentum", torch.optim.SGD, 0.9, False),
     ("nesterov", torch.optim.SGD, 0.9, True)],
)
def test_study_names_map_to_sgd_variants(name, kind, momentum, nesterov):
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], make(optimizer=name))
    assert isinstance(opt, kind)
    assert opt.defaults["momentum"] == momentum and opt.defaults["nesterov"] == nesterov


def test_child_settings_reach_the_optimizer():
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(params, make(optimizer="sgd", **{"optimizer.momentum": 0.5, "optimizer.nesterov": True}))
    assert sgd.defaults["momentum"] == 0.5 and sgd.defaults["nesterov"]
    adam = build_optimizer(params, make(optimizer="adam", **{"optimizer.beta1": 0.8, "optimizer.beta2": 0.99}))
    assert adam.defaults["betas"] == (0.8, 0.99)
    rms = build_optimizer(params, make(optimizer="rmsprop", **{"optimizer.rho": 0.7}))
    assert rms.defaults["alpha"] == 0.7
    adamw = build_optimizer(params, make(optimizer="adamw", weight_decay=0.01))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.01


def test_batch_modes_set_the_steps_per_epoch():
    assert steps_per_epoch(make(batch_size=1), num_train=100) == 100
    assert steps_per_epoch(make(batch_size=32), num_train=100) == 4
    assert steps_per_epoch(make(batch_size="full"), num_train=100) == 1


def test_inverse_time_decay_matches_keras_decay():
    config = make(lr=0.1, schedule="inverse_time", **{"schedule.decay": 0.01})
    assert lr_at(config, step=0, steps_per_epoch=10) == pytest.approx(0.1)
    assert lr_at(config, step=100, steps_per_epoch=10) == pytest.approx(0.1 / 2)


@pytest.mark.parametrize(
    "schedule,extra,step,expected",
    [
        ("constant", {}, 50, 0.1),
        ("exponential", {"schedule.gamma": 0.5}, 20, 0.1 * 0.25),  # 2 epochs of 10 steps
        ("step", {"schedule.gamma": 0.5, "schedule.step_size": 2}, 39, 0.1 * 0.5),  # epoch 3.9 -> one drop
        ("cosine", {"max_epochs": 4}, 20, 0.05),  # half-way through 40 steps
    ],
)
def test_schedules_give_the_documented_lr(schedule, extra, step, expected):
    config = make(lr=0.1, schedule=schedule, **extra)
    assert lr_at(config, step=step, steps_per_epoch=10) == pytest.approx(expected)
