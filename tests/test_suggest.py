"""A name that names nothing gets the closest valid name and the list of valid ones."""

from raysweep.suggest import closest, did_you_mean, unknown

SETTINGS = ["model", "optimizer", "optimizer.momentum", "lr", "batch_size"]


def test_a_misspelt_name_gets_the_closest_valid_one_and_the_list():
    assert unknown("trial setting", "optimiser", SETTINGS) == (
        "unknown trial setting `optimiser`; did you mean `optimizer`? valid: model, optimizer, optimizer.momentum, "
        "lr, batch_size")


def test_a_short_name_finds_its_dotted_setting():
    assert closest("momentum", SETTINGS) == "optimizer.momentum"


def test_a_name_like_nothing_gets_only_the_list():
    assert unknown("trial setting", "xyzzy", ["model", "lr"]) == "unknown trial setting `xyzzy`; valid: model, lr"
    assert did_you_mean("xyzzy", ["model", "lr"]) == ""


def test_names_that_are_not_strings_are_compared_as_text():
    assert closest(320, [32, 64]) == "32"
    assert did_you_mean("tpee", ("tpe", "random", "grid")) == "; did you mean `tpe`?"
