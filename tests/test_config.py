"""TrialConfig: one trial's settings, typed and frozen, built from Tune's flat (or nested) config; every name and
rule checked here, once, with a one-line message naming the key and the rule."""

import dataclasses

import pytest

from raysweep.config import RULES, ConfigError, TrialConfig, field_key, flatten


@pytest.mark.parametrize(
    "values,message",
    [
        ({"optimizer": "adamax"}, r"`optimizer` must be one of \[.*'adam'.*\], but got optimizer='adamax'"),
        ({"lr": -0.1}, r"`lr` must be > 0 and finite, but got lr=-0.1"),
        ({"lr": 0}, r"`lr` must be > 0"),
        ({"lr": float("inf")}, r"`lr` must be > 0 and finite"),
        ({"regularizer.l1_ratio": 1.5}, r"`regularizer.l1_ratio` must be in \[0, 1\], but got .*=1.5"),
        ({"batch_size": 0}, r'`batch_size` must be an integer >= 1 or "full", but got batch_size=0'),
        ({"batch_size": "half"}, r"`batch_size` must be an integer >= 1 or \"full\", but got batch_size='half'"),
        ({"model": "resnet"}, r"`model` must be one of \['cae_mlp', 'mlp'\], but got model='resnet'"),
        ({"regularizer": "l3"}, r"`regularizer` must be one of \['elastic_net', 'l1', 'l2', 'none'\]"),
        ({"regularizer.layers": "middle"}, r"`regularizer.layers` must be one of \['all', 'first', 'last'\]"),
        ({"schedule": "linear"}, r"`schedule` must be one of \[.*'cosine'.*\], but got schedule='linear'"),
        ({"optimizer.momentun": 0.9}, r"unknown trial setting `optimizer.momentun`; valid .*optimizer.momentum"),
        ({"dropout": 1.0}, r"`dropout` must be in \[0, 1\)"),
        ({"hidden": [300, 100], "batch_norm": [3]}, r"`batch_norm` must be hidden layer numbers between 1 and"),
        ({"max_epochs": 2.5}, r"`max_epochs` must be of type int, but got max_epochs=2.5"),
        ({"lr": "fast"}, r"`lr` must be of type float, but got lr='fast'"),
        ({"optimizer": "nesterov", "optimizer.momentum": 0.0}, r"`optimizer.momentum` must be > 0 for Nesterov"),
    ],
)
def test_bad_settings_fail_at_once_naming_the_key_and_the_rule(values, message):
    with pytest.raises(ConfigError, match=message) as caught:
        TrialConfig.from_dict(values)
    assert "\n" not in str(caught.value)


def test_every_rule_names_a_field_of_the_config():
    assert set(RULES) <= {f.name for f in dataclasses.fields(TrialConfig)}


def test_sampler_values_are_coerced_to_the_field_types():
    config = TrialConfig.from_dict({"batch_size": 64.0, "hidden": [300.0, 100], "lr": 1})
    assert config.batch_size == 64 and config.hidden == (300, 100) and config.lr == 1.0
    assert isinstance(config.batch_size, int) and isinstance(config.lr, float)


def test_a_bool_is_not_taken_for_a_number():
    with pytest.raises(ConfigError, match=r"`max_epochs` must be of type int, but got max_epochs=True"):
        TrialConfig.from_dict({"max_epochs": True})


def test_to_dict_round_trips_through_dotted_keys_and_holds_every_default():
    config = TrialConfig.from_dict({"optimizer": "sgd", "optimizer.momentum": 0.5, "schedule.decay": 0.1})
    flat = config.to_dict()
    assert flat["optimizer.momentum"] == 0.5 and "optimizer_momentum" not in flat
    assert len(flat) == len(dataclasses.fields(TrialConfig))  # defaults included: init, activation, patience, ...
    assert TrialConfig.from_dict(flat) == config


def test_a_conditional_choice_nested_by_tune_is_flattened_into_its_settings():
    nested = {"optimizer": {"optimizer": "sgd", "optimizer.momentum": 0.9}, "lr": 0.1}
    assert flatten(nested) == {"optimizer": "sgd", "optimizer.momentum": 0.9, "lr": 0.1}
    config = TrialConfig.from_dict(nested)
    assert (config.optimizer, config.optimizer_momentum, config.lr) == ("sgd", 0.9, 0.1)


def test_field_keys_put_the_parents_name_before_a_dot():
    assert field_key("optimizer_momentum") == "optimizer.momentum"
    assert field_key("regularizer_l1_ratio") == "regularizer.l1_ratio"
    assert field_key("batch_size") == "batch_size"  # no namespace: unchanged


def test_the_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrialConfig().lr = 0.5
