"""Settings that contradict each other are errors before Ray starts: a searched child its parent's options never use,
and a setting searched in two places at once. Which options use which child (conflicts.USED_BY) is checked against
what optim.py and regularize.py actually build."""

from __future__ import annotations

import pytest
import torch

from raysweep.config import TrialConfig
from raysweep.conflicts import USED_BY, searched_twice, unused_children
from raysweep.models import build_model
from raysweep.optim import OPTIMIZERS, SCHEDULES, build_optimizer, lr_at
from raysweep.regularize import REGULARIZERS, build_penalty
from raysweep.sweep import Sweep, SweepError, choice, uniform
from raysweep.validate import validate

PARENT_VALUES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "regularizer": REGULARIZERS}
TWO_VALUES = {  # two values of each child that any option using it must tell apart
    "optimizer.momentum": (0.1, 0.5), "optimizer.nesterov": (False, True), "optimizer.beta1": (0.8, 0.85),
    "optimizer.beta2": (0.99, 0.995), "optimizer.eps": (1e-7, 1e-5), "optimizer.rho": (0.8, 0.85),
    "schedule.decay": (0.1, 0.2), "schedule.gamma": (0.5, 0.9), "schedule.step_size": (2, 3),
    "regularizer.alpha": (1e-4, 1e-3), "regularizer.l1_ratio": (0.2, 0.7), "regularizer.layers": ("all", "first"),
}


def what_it_builds(config: TrialConfig) -> object:
    """What a trial's training does with its settings: the optimizer's hyperparameters, the learning rates of the
    schedule over 60 epochs, the penalty's alpha, l1_ratio and the shapes of the weights it penalises."""
    torch.manual_seed(0)
    model = build_model(config, input_shape=(1, 4, 4), num_classes=3)
    optimizer = build_optimizer(model.parameters(), config)
    hyper = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    lrs = [lr_at(config, step=step, steps_per_epoch=5) for step in range(0, 300, 5)]  # 60 epochs, past a step
    penalty = build_penalty(model, config)
    penalised = None if penalty is None else (penalty.alpha, penalty.l1_ratio, [w.shape for w in penalty.weights])
    return type(optimizer).__name__, hyper, lrs, penalised


@pytest.mark.parametrize("child", sorted(USED_BY))
def test_the_options_said_to_use_a_child_are_exactly_those_whose_training_it_changes(child):
    parent = child.split(".")[0]
    changes = set()
    for value in PARENT_VALUES[parent]:
        base = {"hidden": (8, 8), "max_epochs": 6, parent: value}
        first, second = (TrialConfig.from_dict({**base, child: v}) for v in TWO_VALUES[child])
        if what_it_builds(first) != what_it_builds(second):
            changes.add(value)
    assert changes == set(USED_BY[child])


def test_a_child_searched_where_its_parent_is_fixed_to_an_option_that_ignores_it_is_named():
    sweep = Sweep(name="s", fixed={"optimizer": "adam"}, space={"optimizer.momentum": uniform(0.0, 0.9)})
    assert unused_children(sweep) == [
        "`space.optimizer.momentum` is searched, but `optimizer` can only be 'adam' there, which never uses it "
        "(used by sgd, momentum, nesterov, rmsprop); search it under one of those options"]


def test_a_child_under_a_choice_option_that_ignores_it_is_named_and_one_that_uses_it_is_not():
    space = {"optimizer": choice({"adam": {"optimizer.rho": uniform(0.8, 0.9)},
                                  "rmsprop": {"optimizer.rho": uniform(0.8, 0.9)}})}
    lines = unused_children(Sweep(name="s", space=space))
    assert len(lines) == 1 and lines[0].startswith("`space.optimizer['adam'].optimizer.rho` is searched, but")


def test_a_child_at_the_top_is_fine_when_one_searched_option_uses_it():
    space = {"optimizer": choice(["adam", "sgd"]), "optimizer.momentum": uniform(0.0, 0.9)}
    assert unused_children(Sweep(name="s", space=space)) == []


def test_the_default_parent_counts_when_nothing_sets_it():
    # TrialConfig's default optimizer is sgd, which uses momentum but not beta1.
    assert unused_children(Sweep(name="s", space={"optimizer.momentum": uniform(0.0, 0.9)})) == []
    assert len(unused_children(Sweep(name="s", space={"optimizer.beta1": uniform(0.8, 0.9)}))) == 1


def test_a_setting_searched_at_the_top_and_under_an_option_is_searched_twice():
    space = {"optimizer": choice({"sgd": {"optimizer.momentum": uniform(0.0, 0.9)}, "adam": {}}),
             "optimizer.momentum": choice([0.5, 0.9])}
    assert searched_twice(space) == ["`optimizer.momentum` is searched in two places at once, `space.optimizer` and "
                                     "`space.optimizer.momentum`; search it in one place"]


def test_the_same_child_under_two_options_of_one_choice_is_not_searched_twice():
    # The quickstart's regularizer.alpha under l2 and under elastic_net: only one option is ever chosen.
    alpha = uniform(1e-5, 1e-2)
    space = {"regularizer": choice({"l2": {"regularizer.alpha": alpha}, "elastic_net": {"regularizer.alpha": alpha}})}
    assert searched_twice(space) == []


def test_children_of_two_different_choices_that_are_both_active_are_searched_twice():
    space = {"model": choice({"mlp": {"dropout": uniform(0.0, 0.5)}}),
             "optimizer": choice({"sgd": {"dropout": uniform(0.0, 0.5)}})}
    assert len(searched_twice(space)) == 1


def test_validate_rejects_both_contradictions_in_one_error():
    sweep = Sweep(name="s", fixed={"optimizer": "adam"},
                  space={"optimizer.momentum": uniform(0.0, 0.9),
                         "regularizer": choice({"l2": {"dropout": uniform(0.0, 0.5)}}), "dropout": uniform(0.0, 0.5)})
    with pytest.raises(SweepError) as caught:
        validate(sweep)
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert "`dropout` is searched in two places at once" in lines[0] and "`optimizer` can only be 'adam'" in lines[1]
