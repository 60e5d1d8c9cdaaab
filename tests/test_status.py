"""The rules for how a trial ended (status, stop reason) and what its best was: worked cases by hand."""

from __future__ import annotations

import math

import pytest

from raysweep.status import STATUSES, STOP_REASONS, best_of, status_of, stop_reason_of

MAX = 6


@pytest.mark.parametrize(("last", "failed", "interrupted", "reason", "status"), [
    ({"epoch": 6}, False, False, "max_epochs", "completed"),
    ({"epoch": 2}, False, False, "asha", "early_stopped"),  # stopped early with no flag of its own: the scheduler
    ({"epoch": 3, "early_stopped": True}, False, False, "patience", "early_stopped"),
    ({"epoch": 6, "early_stopped": True}, False, False, "patience", "early_stopped"),  # patience on the last epoch
    ({"epoch": 1, "diverged": True}, False, False, "diverged", "diverged"),
    ({"epoch": 1, "diverged": True, "early_stopped": True}, False, False, "diverged", "diverged"),
    ({"epoch": 2}, True, False, "failed", "failed"),
    ({"epoch": 2}, False, True, "interrupted", "interrupted"),
    ({"training_iteration": 2}, False, False, "asha", "early_stopped"),  # no epoch key: Tune's iteration counts
])
def test_one_stop_reason_per_trial_and_the_status_it_implies(last, failed, interrupted, reason, status):
    assert stop_reason_of(last, max_epochs=MAX, failed=failed, interrupted=interrupted) == reason
    assert status_of(last, max_epochs=MAX, failed=failed, interrupted=interrupted) == status
    assert reason in STOP_REASONS and status in STATUSES


def test_asha_and_patience_are_told_apart():
    asha = stop_reason_of({"epoch": 3}, max_epochs=MAX, failed=False)
    patience = stop_reason_of({"epoch": 3, "early_stopped": True}, max_epochs=MAX, failed=False)
    assert (asha, patience) == ("asha", "patience")


def test_best_is_the_best_epoch_not_the_last_and_knows_its_epoch():
    history = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.8}, {"epoch": 3, "val_acc": 0.7}]
    assert best_of(history, metric="val_acc", mode="max") == (0.8, 2)


def test_best_follows_the_mode():
    history = [{"epoch": 1, "val_loss": 0.9}, {"epoch": 2, "val_loss": 0.4}, {"epoch": 3, "val_loss": 0.6}]
    assert best_of(history, metric="val_loss", mode="min") == (0.4, 2)
    assert best_of(history, metric="val_loss", mode="max") == (0.9, 1)


def test_best_takes_the_first_epoch_of_a_tie_and_never_a_nan():
    history = [{"epoch": 1, "val_loss": math.nan}, {"epoch": 2, "val_loss": 0.5}, {"epoch": 3, "val_loss": 0.5},
               {"epoch": 4, "val_loss": -math.inf}]
    assert best_of(history, metric="val_loss", mode="min") == (0.5, 2)


def test_a_trial_without_a_finite_value_has_no_best():
    value, epoch = best_of([{"epoch": 1, "val_acc": math.nan}, {"epoch": 2}], metric="val_acc", mode="max")
    assert math.isnan(value) and epoch is None
