"""Importing a sweep file: its SWEEP, a file that is missing, not Python or not importable, and what it may define."""

from pathlib import Path

import pytest

from raysweep.sweep import Choice, SweepError
from raysweep.sweep_file import load
from tests.sweep_runs import sweep_source, write_text

TESTS = Path(__file__).resolve().parent
CONDITIONAL = TESTS / "sweeps" / "conditional.py"


def test_a_misspelt_sweep_field_names_the_closest_one(tmp_path):
    with pytest.raises(SweepError, match=r"did you mean `max_epochs`") as caught:
        load(write_text(tmp_path, sweep_source("max_epoch=3")))
    assert "\n" not in str(caught.value)


def test_a_conditional_choice_keeps_each_options_children():
    optimizer = load(CONDITIONAL).space["optimizer"]
    assert isinstance(optimizer, Choice) and optimizer.conditional
    children = dict(zip(optimizer.options, optimizer.children, strict=True))
    assert set(children["adam"]) == {"optimizer.beta1", "optimizer.beta2"} and children["adagrad"] == {}
    nesterov = children["sgd"]["optimizer.nesterov"]
    assert nesterov.options == (False, True) and set(nesterov.children[1]) == {"optimizer.momentum"}


def test_a_missing_or_non_python_sweep_file_is_a_sweep_error(tmp_path):
    with pytest.raises(SweepError, match=r"must be an existing .py file, but it does not exist"):
        load(tmp_path / "nowhere.py")
    with pytest.raises(SweepError, match=r"must be a Python file ending in .py"):
        load(write_text(tmp_path, sweep_source(""), name="sweep.txt"))


def test_a_sweep_file_may_define_its_own_dataclasses(tmp_path):
    # With postponed annotations, @dataclass looks the defining module up in sys.modules while it builds the class.
    source = "from __future__ import annotations\nfrom dataclasses import dataclass\n" + sweep_source("")
    source += "\n\n@dataclass\nclass Widths:\n    first: int\n"
    assert load(write_text(tmp_path, source)).name == "bad"
