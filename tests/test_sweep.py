"""What a sweep file imports: the Sweep dataclass and the domain helpers, and the plain-data views of a sweep."""

import json

from raysweep.sweep import (
    Choice,
    Sweep,
    Uniform,
    choice,
    domain_text,
    loguniform,
    quniform,
    searched_names,
    trial_settings,
    uniform,
    varied_names,
)

CONDITIONAL_OPTIMIZER = choice({"sgd": {"optimizer.momentum": uniform(0.0, 0.9)}, "adam": {}})


def test_domain_helpers_build_the_domains_they_name():
    assert uniform(0, 1) == Uniform(0, 1, log=False, q=None)
    assert loguniform(1e-4, 1e-1) == Uniform(1e-4, 1e-1, log=True, q=None)
    assert quniform(16, 256, 16) == Uniform(16, 256, log=False, q=16)
    assert choice([1, 2]) == Choice((1, 2)) and not choice([1, 2]).conditional


def test_a_choice_of_a_dict_is_conditional_and_keeps_each_options_children():
    assert CONDITIONAL_OPTIMIZER.conditional
    assert CONDITIONAL_OPTIMIZER.options == ("sgd", "adam")
    assert CONDITIONAL_OPTIMIZER.children == ({"optimizer.momentum": uniform(0.0, 0.9)}, {})


def test_domain_text_reads_as_the_sweep_file_wrote_it():
    assert domain_text(loguniform(1e-4, 0.1)) == "loguniform(0.0001, 0.1)"
    assert domain_text(quniform(16, 256, 16)) == "uniform(16, 256, q=16)"
    assert domain_text(choice([32, "full"])) == "choice([32, 'full'])"
    assert domain_text(CONDITIONAL_OPTIMIZER) == "choice({'sgd': {'optimizer.momentum': uniform(0, 0.9)}, 'adam': {}})"


def test_searched_and_varied_names_include_conditional_children_and_explicit_trials():
    sweep = Sweep(name="s", space={"optimizer": CONDITIONAL_OPTIMIZER, "lr": loguniform(1e-3, 1e-1)})
    assert searched_names(sweep) == ["optimizer", "optimizer.momentum", "lr"]
    grid = Sweep(name="g", searcher="grid", trials=({"optimizer": "adam"}, {"batch_size": "full"}))
    assert varied_names(grid) == ["optimizer", "batch_size"] and searched_names(grid) == []


def test_trial_settings_carry_the_budget_and_seed_beside_the_fixed_settings():
    sweep = Sweep(name="s", fixed={"lr": 0.1}, max_epochs=7, seed=3)
    assert trial_settings(sweep) == {"lr": 0.1, "max_epochs": 7, "seed": 3}


def test_to_dict_is_plain_data_with_the_space_as_text():
    sweep = Sweep(name="s", fixed={"hidden": (64,)}, space={"lr": loguniform(1e-3, 1e-1)}, max_epochs=4)
    plain = sweep.to_dict()
    assert plain["space"] == {"lr": "loguniform(0.001, 0.1)"}
    assert plain["max_epochs"] == 4 and plain["fixed"] == {"hidden": (64,)}
    assert json.loads(json.dumps(plain, default=str))["name"] == "s"  # what --dry-run prints and MLflow stores
