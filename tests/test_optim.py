"""Optimizer names, batch modes and learning-rate schedules."""

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raysweep.config import TrialConfig
from raysweep.optim import build_optimizer, lr_at, steps_per_epoch

REPO = Path(__file__).resolve().parents[1]


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


CASES = [("sgd", {}), ("momentum", {"weight_decay": 1e-3}), ("nesterov", {}), ("adam", {"weight_decay": 1e-4}),
         ("adamw", {"weight_decay": 1e-2}), ("rmsprop", {"optimizer.momentum": 0.5}), ("adagrad", {})]


def _trained(optimizer_of, name, settings, *, steps=5):
    """A small net after `steps` steps of the optimizer `optimizer_of(params, config)` builds, its lr changing per step
    as train.py changes it; the same data and start every call."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    config = make(optimizer=name, lr=0.05, schedule="inverse_time", **{"schedule.decay": 0.1}, **settings)
    optimizer = optimizer_of(net.parameters(), config)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config, step=step, steps_per_epoch=4)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net, optimizer


def _torch_optimizer(params, config):
    """What build_optimizer builds, as torch's own class: the same class name, arguments and defaults."""
    ours = build_optimizer([torch.nn.Parameter(torch.zeros(1))], config)
    kind = getattr(torch.optim, type(ours).__name__)
    return kind(params, **{k: v for k, v in ours.defaults.items() if k in inspect.signature(kind).parameters})


@pytest.mark.parametrize("name,settings", CASES)
def test_each_optimizer_steps_exactly_as_torchs_own_class(name, settings):
    ours, ours_opt = _trained(build_optimizer, name, settings)
    theirs, theirs_opt = _trained(_torch_optimizer, name, settings)
    assert type(ours_opt) is not type(theirs_opt) and isinstance(ours_opt, type(theirs_opt))
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    ours_state, theirs_state = ours_opt.state_dict(), theirs_opt.state_dict()
    assert ours_state["param_groups"] == theirs_state["param_groups"]
    for key, state in theirs_state["state"].items():
        assert state.keys() == ours_state["state"][key].keys()
        assert all(torch.equal(state[k], ours_state["state"][key][k]) for k in state)


@pytest.mark.parametrize("name,settings", CASES)
def test_a_checkpointed_torch_optimizer_state_resumes_in_ours_and_back(name, settings):
    _, theirs_opt = _trained(_torch_optimizer, name, settings, steps=3)
    net, ours_opt = _trained(build_optimizer, name, settings, steps=0)
    ours_opt.load_state_dict(theirs_opt.state_dict())  # a checkpoint written before the optimizers were ours
    assert ours_opt.state_dict()["param_groups"] == theirs_opt.state_dict()["param_groups"]
    _, again = _trained(_torch_optimizer, name, settings, steps=0)
    again.load_state_dict(ours_opt.state_dict())
    assert str(again.state_dict()) == str(theirs_opt.state_dict())


def test_training_with_every_optimizer_never_imports_torch_dynamo():
    script = """
import sys
import torch
from tests.test_optim import CASES, _trained
from raysweep.optim import build_optimizer
for name, settings in CASES:
    _, optimizer = _trained(build_optimizer, name, settings)
    optimizer.load_state_dict(optimizer.state_dict())
assert "torch._dynamo" not in sys.modules, "torch._dynamo was imported"
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
