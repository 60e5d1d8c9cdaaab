"""--set on the command line: values as literals, bare words or the sweep file's domain helpers (read with ast, never
evaluated), several bad assignments reported together, and points_to_evaluate that follow a changed space."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysweep.overrides import fit_points, override, parse_value
from raysweep.sweep import Choice, Sweep, SweepError, Uniform, choice, loguniform, uniform
from raysweep.validate import load, resolve, validate

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "sweeps" / "quickstart.py"


@pytest.mark.parametrize("text,domain", [
    ("loguniform(1e-4,1e-1)", Uniform(1e-4, 1e-1, log=True)),
    ("uniform(0, 0.5)", Uniform(0.0, 0.5)),
    ("quniform(16, 256, 16)", Uniform(16, 256, q=16)),
    ("loguniform(1e-4, 1e-1, q=1e-4)", Uniform(1e-4, 1e-1, log=True, q=1e-4)),
    ("choice(['sgd', 'adam'])", Choice(("sgd", "adam"))),
    ("choice({'sgd': {'optimizer.momentum': uniform(0, 0.9)}, 'adam': {}})",
     Choice(("sgd", "adam"), ({"optimizer.momentum": Uniform(0, 0.9)}, {}))),
])
def test_a_searched_setting_takes_the_sweep_files_domain_helpers(text, domain):
    assert parse_value(text, where="--set space.x", domains=True) == domain


@pytest.mark.parametrize("text,value", [("[0.1, 0.01]", [0.1, 0.01]), ("0.5", 0.5), ("random", "random"),
                                        ("None", None), ("full", "full"), ("'a b'", "a b"), ("a b", "a b")])
def test_other_values_are_python_literals_or_bare_words(text, value):
    assert parse_value(text, where="--set x", domains=False) == value


@pytest.mark.parametrize("text", ["__import__('os').system('touch pwned')", "open('pwned', 'w')",
                                  "loguniform(float('1e-4'), 0.1)", "choice(list(range(3)))", "os.getcwd()"])
def test_nothing_but_domain_helpers_with_literal_arguments_is_accepted_and_nothing_runs(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SweepError, match=r"^--set space.lr: (only calls to choice, uniform, loguniform, quniform|"
                                         r"arguments must be literals)"):
        parse_value(text, where="--set space.lr", domains=True)
    assert list(tmp_path.iterdir()) == []


def test_a_domain_for_a_fixed_setting_is_refused_with_the_fix():
    with pytest.raises(SweepError, match=r"--set fixed.lr: a domain such as loguniform\(...\) searches a setting: "
                                         r"use space.SETTING"):
        override(Sweep(name="s"), ["fixed.lr=loguniform(1e-4, 0.1)"])


def test_a_helper_called_wrongly_names_the_call():
    with pytest.raises(SweepError, match=r"--set space.lr: .*argument.* in 'loguniform\(0.1\)'"):
        parse_value("loguniform(0.1)", where="--set space.lr", domains=True)


def test_set_space_with_a_domain_searches_the_setting_and_unpins_it():
    sweep = override(Sweep(name="s", fixed={"lr": 0.1}), ["space.lr=loguniform(1e-4,1e-1)"])
    assert sweep.space["lr"] == Uniform(1e-4, 1e-1, log=True) and "lr" not in sweep.fixed
    validate(sweep)


def test_every_bad_assignment_is_reported_at_once():
    with pytest.raises(SweepError) as caught:
        override(Sweep(name="s"), ["epochs=3", "fixed.optimiser=adam", "num_samples=4"])
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("--set: unknown key `epochs`; did you mean `max_epochs`?")
    assert lines[1].startswith("--set fixed.optimiser: unknown trial setting `optimiser`; did you mean `optimizer`?")


def test_the_readmes_example_on_the_quickstart_drops_the_point_that_no_longer_fits(capsys):
    # Quickstart's point has lr=1e-3, which a search over [0.1, 0.01] can never propose.
    sweep = resolve(QUICKSTART, assignments=["space.lr=[0.1,0.01]"])
    assert sweep.space["lr"] == Choice((0.1, 0.01)) and sweep.points_to_evaluate == []
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == ["raysweep.run: warning: points_to_evaluate[0] dropped: `lr`=0.001 is not one of [0.1, 0.01] "
                        "after --set"]


def test_a_point_keeps_its_other_values_when_a_setting_it_gives_is_pinned():
    notes = []
    sweep = override(load(QUICKSTART), ["space.dropout=0.1"], warn=notes.append)
    assert sweep.fixed["dropout"] == 0.1
    point = {"optimizer": "adam", "optimizer.beta1": 0.9, "lr": 1e-3, "regularizer": "none"}
    assert list(sweep.points_to_evaluate) == [point]
    assert notes == ["points_to_evaluate[0]: `dropout` no longer searched after --set; the point keeps the rest"]
    validate(sweep)


def test_a_point_inside_a_narrowed_range_stays_and_one_outside_is_dropped():
    sweep = Sweep(name="s", space={"lr": loguniform(1e-4, 1e-1)}, points_to_evaluate=[{"lr": 0.05}, {"lr": 0.5}])
    fitted, notes = fit_points(sweep)
    assert fitted.points_to_evaluate == [{"lr": 0.05}]
    assert notes == ["points_to_evaluate[1] dropped: `lr`=0.5 is outside [0.0001, 0.1] after --set"]


def test_tpe_drops_a_point_missing_a_newly_searched_setting_but_random_search_keeps_it():
    space = {"lr": loguniform(1e-4, 1e-1), "dropout": uniform(0.0, 0.5)}
    for searcher, kept in (("tpe", 0), ("random", 1)):
        sweep = Sweep(name="s", searcher=searcher, space=space, points_to_evaluate=[{"lr": 0.01}])
        assert len(fit_points(sweep)[0].points_to_evaluate) == kept


def test_a_point_under_a_conditional_choice_is_checked_under_the_option_it_chose():
    space = {"optimizer": choice({"sgd": {"optimizer.momentum": uniform(0.0, 0.5)}, "adam": {}})}
    sweep = Sweep(name="s", space=space, points_to_evaluate=[{"optimizer": "sgd", "optimizer.momentum": 0.9},
                                                             {"optimizer": "adam"}])
    fitted, notes = fit_points(sweep)
    assert fitted.points_to_evaluate == [{"optimizer": "adam"}]
    assert notes == ["points_to_evaluate[0] dropped: `optimizer.momentum`=0.9 is outside [0, 0.5] after --set"]
