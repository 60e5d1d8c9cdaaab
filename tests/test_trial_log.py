"""The driver's record of every result: appended line by line, read back with one (the first) report per epoch."""

from __future__ import annotations

import math

from raysweep import trial_log


def test_a_restarted_trial_keeps_the_first_report_of_each_epoch_in_epoch_order(tmp_path):
    log = tmp_path / trial_log.LOG_FILE
    trial_log.append_start(log, trial_id="a", label="adam lr=0.01")
    for epoch, acc in ((1, 0.5), (2, 0.6), (3, 0.7)):
        trial_log.append_result(log, trial_id="a", result={"epoch": epoch, "val_acc": acc, "pid": 11})
    trial_log.append_start(log, trial_id="a", label="adam lr=0.01")  # restarted from epoch 2's checkpoint
    trial_log.append_result(log, trial_id="a", result={"epoch": 3, "val_acc": 0.65})
    trial_log.append_result(log, trial_id="a", result={"epoch": 4, "val_acc": 0.75})
    (history,) = trial_log.read(log).values()
    assert history.label == "adam lr=0.01"
    assert [(r["epoch"], r["val_acc"]) for r in history.results] == [(1, 0.5), (2, 0.6), (3, 0.7), (4, 0.75)]
    assert "pid" not in history.results[0]  # only the keys trials.csv and the rules read


def test_a_nan_loss_survives_and_a_cut_last_line_is_skipped(tmp_path):
    log = tmp_path / trial_log.LOG_FILE
    trial_log.append_result(log, trial_id="b", result={"epoch": 1, "val_loss": math.nan, "diverged": True})
    with open(log, "a") as handle:
        handle.write('{"event": "result", "trial_id": "b", "epo')  # the driver was killed mid-line
    trial_log.append_result(log, trial_id="b", result={"epoch": 2, "val_loss": 0.5})  # the resumed driver's
    (history,) = trial_log.read(log).values()
    assert [r["epoch"] for r in history.results] == [1, 2] and math.isnan(history.results[0]["val_loss"])


def test_no_log_means_no_histories(tmp_path):
    assert trial_log.read(tmp_path / "absent.jsonl") == {}
