"""Loading a sweep file, --set overrides, the smoke budget, and validating the result once before Ray starts."""

from pathlib import Path

import pytest

from raysweep.overrides import override, smoke_budget
from raysweep.sweep import Choice, Sweep, SweepError, loguniform
from raysweep.validate import load, resolve, validate
from tests.sweep_runs import SWEEP_HEADER, sweep_source, write_text

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CONDITIONAL = TESTS / "sweeps" / "conditional.py"
GRID = TESTS / "sweeps" / "grid_conditional.py"


SGD_ADAM = 'choice({"sgd": {"optimizer.momentum": uniform(0.0, 0.9)}, "adam": {"optimizer.beta1": uniform(0.8, 0.95)}})'
POINT = '"optimizer": "adam", "optimizer.beta1": 0.9, "lr": 0.01'



# ------------------------------------------------------------------------------------------------ load()
@pytest.mark.parametrize("path", [CONDITIONAL, GRID, *sorted((REPO / "sweeps").glob("*.py"))], ids=lambda p: p.name)
def test_good_sweep_files_load_as_validated_sweeps(path):
    assert isinstance(resolve(path), Sweep)  # resolve() raises SweepError on anything it would not run




BAD_SWEEPS = {  # id: (the sweep file's text, the one-line message it must fail with)
    "syntax-error": ("SWEEP = Sweep(name='bad'\n", r"syntax error at line \d+"),
    "no-SWEEP": ("X = 1\n", r"must define `SWEEP = Sweep\(...\)`, but defines no SWEEP"),
    "SWEEP-wrong-type": ("SWEEP = {'name': 'bad'}\n", r"`SWEEP` must be a raysweep.sweep.Sweep, but got dict"),
    "unknown-Sweep-argument": (SWEEP_HEADER + "SWEEP = Sweep(name='bad', epochs=3)\n",
                               r"unknown Sweep field `epochs`; did you mean `max_epochs`\? valid: name, dataset, .*"),
    "multi-line-import-error": ("raise ValueError('first line\\nsecond line')\n",
                                r"ValueError while importing: first line second line$"),
    "unknown-searcher": (sweep_source('searcher="bayes"'),
                         r"`searcher` must be one of \['tpe', 'random', 'grid'\], but got searcher='bayes'"),
    "unknown-scheduler": (sweep_source('scheduler="hyperband"'),
                          r"`scheduler` must be one of \['asha', 'none'\], but got scheduler='hyperband'"),
    "unknown-dataset": (sweep_source('dataset="imagenet"'),
                        r"`dataset` must be one of \[.*'digits'.*\], but got dataset='imagenet'"),
    "fixed-lr-zero": (sweep_source('fixed={"lr": 0.0}'), r"^fixed: `lr` must be > 0 and finite, but got lr=0.0"),
    "loguniform-low-zero": (sweep_source('space={"lr": loguniform(0.0, 0.1)}'),
                            r"`space.lr`: loguniform needs `low > 0`, but got low=0.0"),
    "low-above-high": (sweep_source('space={"dropout": uniform(0.5, 0.1)}'),
                       r"`space.dropout`: `low < high` must hold, but got low=0.5, high=0.1"),
    "choice-of-nothing": (sweep_source('space={"lr": choice([])}'), r"`space.lr`: a choice needs at least one option"),
    "unknown-setting-in-space": (sweep_source('space={"epochs": choice([1, 2])}'),
                                 r"space.epochs: unknown trial setting `epochs`"),
    "unknown-child-setting": (
        sweep_source('space={"optimizer": choice({"sgd": {"optimizer.momentun": uniform(0.0, 0.9)}})}'),
        r"space.optimizer\['sgd'\].optimizer.momentun: unknown trial setting `optimizer.momentun`"),
    "l1_ratio-corner-outside-0-1": (
        sweep_source('space={"regularizer": choice({"elastic_net": {"regularizer.l1_ratio": uniform(0.0, 1.5)}})}'),
        r"space.regularizer\['elastic_net'\].regularizer.l1_ratio: `regularizer.l1_ratio` must be in \[0, 1\], .*=1.5"),
    "scalar-in-space": (sweep_source('space={"lr": 0.01}'),
                        r"`space.lr` must be a domain .*but got 0.01; put fixed values in `fixed`"),
    "grid-over-continuous": (sweep_source('searcher="grid"'),
                             r"`space.lr` must be a choice\(\[...\]\) for grid search, but got a continuous domain"),
    "metric-mode-mismatch": (sweep_source('metric="val_loss", mode="max"'),
                             r"`mode` must be 'min' for metric 'val_loss', but got mode='max'"),
    "fixed-and-searched": (sweep_source('fixed={"lr": 0.01}'),
                           r"`space.lr`: a setting is either fixed or searched, but `lr` is in both"),
    "fixed-and-searched-child": (
        sweep_source(f'fixed={{"optimizer.momentum": 0.5}}, space={{"optimizer": {SGD_ADAM}}}'),
        r"`space.optimizer\['sgd'\].optimizer.momentum`: a setting is either fixed or searched"),
    "point-unknown-key": (sweep_source('points_to_evaluate=[{"lr": 0.01, "momentum": 0.9}]'),
                          r"`points_to_evaluate\[0\]`: every key must be a searched setting.*\['momentum'\]"),
    "point-child-of-other-option": (
        sweep_source(f'space={{"optimizer": {SGD_ADAM}, "lr": loguniform(1e-3, 0.1)}}, '
                     f'points_to_evaluate=[{{{POINT}, "optimizer.momentum": 0.9}}]'),
        r"`points_to_evaluate\[0\]`: every key must be a searched setting under the options .*'optimizer.momentum'"),
    "point-option-not-offered": (
        sweep_source(f'space={{"optimizer": {SGD_ADAM}}}, points_to_evaluate=[{{"optimizer": "rmsprop"}}]'),
        r"`points_to_evaluate\[0\].optimizer` must be one of the choice's options \['sgd', 'adam'\], .*'rmsprop'"),
    "tpe-point-incomplete": (
        sweep_source(f'space={{"optimizer": {SGD_ADAM}, "lr": loguniform(1e-3, 0.1)}}, '
                     'points_to_evaluate=[{"optimizer": "adam", "lr": 0.01}]'),
        r"`points_to_evaluate\[0\]`: TPE needs a value for every setting .*none for \['optimizer.beta1'\]"),
    "whole-number-setting-continuous": (sweep_source('space={"batch_size": uniform(16, 128)}'),
                                        r"`space.batch_size` takes whole numbers, so it needs a whole q"),
    "q-not-dividing-bounds": (sweep_source('space={"batch_size": quniform(10, 100, 16)}'),
                              r"`space.batch_size`: low and high must be multiples of q"),
    "infinite-bound": (sweep_source('space={"weight_decay": loguniform(1e-5, float("inf"))}'),
                       r"`space.weight_decay.low/high` must be finite numbers"),
    "val_size-fraction-above-1": (sweep_source("val_size=1.5"),
                                  r"`val_size` must be None, a count >= 1 or a fraction in \(0, 1\), .*=1.5"),
    "max_epochs-zero": (sweep_source("max_epochs=0"), r"`max_epochs` must be an integer >= 1, but got max_epochs=0"),
    "grace_period-above-max_epochs": (sweep_source("max_epochs=3, grace_period=4"),
                                      r"`grace_period` must be an integer in \[1, max_epochs=3\]"),
    "gpu-above-1": (sweep_source("gpu=1.5"),
                    r"`gpu` must be at most 1 per trial \(a trial uses one device; fractions pack trials onto a GPU\), "
                    r"but got gpu=1.5"),
    "gpu-a-word": (sweep_source('gpu="all"'), r'`gpu` must be "auto" or a number in \[0, 1\] per trial'),
    "name-with-space": (sweep_source('name="my sweep"'), r"`name` must be a non-empty name of letters, digits, -"),
}


@pytest.mark.parametrize("source,message", BAD_SWEEPS.values(), ids=BAD_SWEEPS)
def test_bad_sweep_files_fail_in_one_line_naming_the_field_and_rule(tmp_path, source, message):
    with pytest.raises(SweepError, match=message) as caught:
        resolve(write_text(tmp_path, source))
    assert "\n" not in str(caught.value)






# ------------------------------------------------------------------------------------------------ override()
@pytest.fixture()
def base():
    return Sweep(name="base", fixed={"batch_size": 32}, space={"lr": loguniform(1e-3, 1e-1)})


def test_set_assigns_sweep_fields_as_python_literals_or_bare_words(base):
    sweep = override(base, ["num_samples=5", "searcher=random", "val_size=0.1", "subset=None"])
    assert (sweep.num_samples, sweep.searcher, sweep.val_size, sweep.subset) == (5, "random", 0.1, None)
    assert isinstance(sweep.num_samples, int)


def test_set_fixed_setting_fixes_it_and_stops_searching_it(base):
    sweep = override(base, ["fixed.lr=0.05", "fixed.hidden=[64, 32]"])
    assert sweep.fixed == {"batch_size": 32, "lr": 0.05, "hidden": [64, 32]} and "lr" not in sweep.space
    validate(sweep)


def test_set_space_list_searches_the_setting_as_a_choice(base):
    sweep = override(base, ["space.batch_size=[16, 64, 'full']"])
    assert sweep.space["batch_size"] == Choice((16, 64, "full")) and "batch_size" not in sweep.fixed
    validate(sweep)


def test_set_space_scalar_pins_the_setting(base):
    sweep = override(base, ["space.lr=0.02"])
    assert sweep.fixed["lr"] == 0.02 and "lr" not in sweep.space


def test_set_leaves_the_original_sweep_untouched(base):
    override(base, ["fixed.lr=0.05", "space.batch_size=[16]"])
    assert base.fixed == {"batch_size": 32} and set(base.space) == {"lr"}


@pytest.mark.parametrize(
    "assignment,message",
    [
        ("epochs=3", r"--set: unknown key `epochs`; did you mean `max_epochs`\? valid: name, dataset, .*num_samples"),
        ("num_samples", r"--set: must be KEY=VALUE, but got 'num_samples'"),
        ("=3", r"--set: must be KEY=VALUE"),
        ("fixed.momentum=0.9", r"--set fixed.momentum: unknown trial setting `momentum`"),
        ("space.seed=[1, 2]", r"--set space.seed: `seed` is a Sweep field, not a trial setting: set it with"),
        ("fixed=3", r"--set: unknown key `fixed`"),
    ],
)
def test_set_rejects_keys_that_name_nothing(base, assignment, message):
    with pytest.raises(SweepError, match=message):
        override(base, [assignment])


@pytest.mark.parametrize(
    "assignment,message",
    [
        ("searcher=bogus", r"`searcher` must be one of"),
        ("max_epochs=abc", r"`max_epochs` must be an integer >= 1, but got max_epochs='abc'"),
        ("dataset=[1]", r"`dataset` must be one of"),
        ("metric=['val_acc']", r"`metric` must be one of"),
        ("fixed.lr=-1", r"fixed: `lr` must be > 0"),
    ],
)
def test_set_values_are_validated_like_the_file(base, assignment, message):
    with pytest.raises(SweepError, match=message):
        validate(override(base, [assignment]))


def test_pinning_a_conditional_child_is_refused_not_silently_overridden():
    # The child lives under optimizer=sgd, not at the top level: pinning it there would leave both in play.
    with pytest.raises(SweepError, match=r"either fixed or searched, but `optimizer.momentum` is in both"):
        validate(override(load(CONDITIONAL), ["space.optimizer.momentum=0.9"]))


# ------------------------------------------------------------------------------------------------ smoke_budget()
def test_smoke_is_two_trials_of_one_epoch_on_a_small_subset():
    sweep = smoke_budget(load(CONDITIONAL))
    assert (sweep.num_samples, sweep.max_epochs, sweep.grace_period, sweep.subset) == (2, 1, 1, 256)
    assert sweep.searcher == "tpe" and len(sweep.points_to_evaluate) == 2
    validate(sweep)


def test_smoke_turns_grid_search_into_random_search():
    sweep = smoke_budget(load(GRID))
    assert sweep.searcher == "random" and sweep.num_samples == 2
    validate(sweep)


def test_smoke_keeps_a_smaller_subset_and_caps_validation_on_large_data_sets():
    sweep = smoke_budget(Sweep(name="s", dataset="mnist", subset=100, space={"lr": loguniform(1e-3, 1e-1)}))
    assert sweep.subset == 100 and sweep.val_size == 500




# ------------------------------------------------------------------------------------------------ suggestions
@pytest.mark.parametrize("source,message", [
    (sweep_source('fixed={"optimiser": "adam"}'),
     r"^fixed: unknown trial setting `optimiser`; did you mean `optimizer`\? valid: model, hidden, .*, min_delta$"),
    (sweep_source('space={"momentum": uniform(0.0, 0.9)}'),
     r"unknown trial setting `momentum`; did you mean `optimizer.momentum`\?"),
    (sweep_source('fixed={"optimizer": "adamm"}'),
     r"^fixed: `optimizer` must be one of \['adagrad', 'adam', .*\], but got optimizer='adamm'; did you mean `adam`\?"),
    (sweep_source('space={"schedule": choice(["cosine", "exponentail"])}'),
     r"`schedule` must be one of .*, but got schedule='exponentail'; did you mean `exponential`\?"),
    (sweep_source('searcher="randm"'), r"`searcher` must be one of .*, but got searcher='randm'; did you mean"),
    (sweep_source('dataset="fashion-mnist"'), r"but got dataset='fashion-mnist'; did you mean `fashion_mnist`\?"),
    (sweep_source('fixed={"seed": 3}'), r"fixed: `seed` is a Sweep field, not a trial setting"),
])
def test_an_unknown_name_suggests_the_closest_valid_one(tmp_path, source, message):
    with pytest.raises(SweepError, match=message):
        resolve(write_text(tmp_path, source))


def test_a_sweep_file_with_several_mistakes_reports_all_of_them_one_line_each(tmp_path):
    source = sweep_source('searcher="bayes", num_samples=0, fixed={"optimiser": "adam", "lr": -1.0}, '
                          'space={"dropout": uniform(0.5, 0.1), "lr": loguniform(0.0, 0.1)}')
    with pytest.raises(SweepError) as caught:
        resolve(write_text(tmp_path, source))
    lines = str(caught.value).splitlines()
    assert [line.split(" must ")[0].split(":")[0] for line in lines] == [
        "`searcher`", "`num_samples`", "fixed", "`space.dropout`", "`space.lr`"]
    assert "did you mean `optimizer`" in lines[2] and "loguniform needs `low > 0`" in lines[4]


def test_one_bad_fixed_value_is_reported_once_not_at_every_corner_of_the_space(tmp_path):
    source = sweep_source('fixed={"batch_size": 0}, space={"lr": loguniform(1e-3, 0.1), "dropout": uniform(0, 0.5)}')
    with pytest.raises(SweepError) as caught:
        resolve(write_text(tmp_path, source))
    assert str(caught.value) == "fixed: `batch_size` must be an integer >= 1 or \"full\", but got batch_size=0"


def test_bad_set_assignments_are_reported_with_the_files_own_mistakes(tmp_path):
    path = write_text(tmp_path, sweep_source('scheduler="hyperband"'))
    with pytest.raises(SweepError) as caught:
        resolve(path, assignments=["epochs=3"])
    lines = str(caught.value).splitlines()
    assert len(lines) == 2 and lines[0].startswith("--set: unknown key `epochs`") and "`scheduler`" in lines[1]
