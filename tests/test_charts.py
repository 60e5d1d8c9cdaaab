"""The report's charts, drawn from small hand-made frames: what each figure plots, and that the files are PNGs."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysweep import charts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Three trials, first to last as the charts list them; wall times span 500x, so their axis is a log one.
SUMMARY = pd.DataFrame({
    "run_id": ["r0", "r1", "r2"],
    "label": ["adam", "sgd", "rmsprop"],
    "status": ["completed", "diverged", "early_stopped"],
    "epochs": [3, 2, 1],
    "wall_time_s": [1.0, 250.0, 0.5],
    "final_val_loss": [0.5, math.inf, 0.9],
    "final_val_acc": [0.9, 0.1, 0.7],
})
# run_id -> metric -> values at epochs 1, 2, ...; sgd diverged: its train loss blew up, its val loss became inf.
CURVES = {
    "r0": {"train_loss": [1.0, 0.7, 0.4], "val_loss": [1.1, 0.8, 0.5], "train_acc": [0.6, 0.8, 0.95],
           "val_acc": [0.55, 0.75, 0.9]},
    "r1": {"train_loss": [2.0, 1e9], "val_loss": [2.0, math.inf], "train_acc": [0.2, 0.1], "val_acc": [0.15, 0.1]},
    "r2": {"train_loss": [0.95], "val_loss": [0.9], "train_acc": [0.7], "val_acc": [0.7]},
}
HISTORY = pd.DataFrame([(run_id, epoch, metric, value) for run_id, metrics in CURVES.items()
                        for metric, values in metrics.items() for epoch, value in enumerate(values, start=1)],
                       columns=["run_id", "epoch", "metric", "value"])


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def _bar_chart(column: str):
    return charts.bar_chart(SUMMARY, column=column, title="t", xlabel="x").axes[0]


def test_charts_does_not_import_the_report():
    # A fresh interpreter: in this one, test_report may already have imported raysweep.report.
    code = "import sys, raysweep.charts; print('raysweep.report' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(charts.__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_bar_chart_draws_one_bar_per_trial_in_order_with_its_value_first_on_top():
    ax = _bar_chart("final_val_acc")
    assert [bar.get_width() for bar in ax.containers[0]] == [0.9, 0.1, 0.7]
    assert [tick.get_text() for tick in ax.get_yticklabels()] == ["adam", "sgd [diverged]", "rmsprop"]
    bottom, top = ax.get_ylim()
    assert top < bottom  # the y axis runs downward: bar 0, the first trial, is on top
    assert {text.get_text() for text in ax.texts} == {" 0.9", " 0.1", " 0.7"}


def test_bar_chart_hatches_the_marked_trial_only():
    ax = _bar_chart("final_val_acc")
    assert [bar.get_hatch() for bar in ax.containers[0]] == [None, "///", None]


def test_bar_chart_says_a_non_finite_value_in_words_instead_of_a_bar():
    ax = _bar_chart("final_val_loss")
    assert [bar.get_width() for bar in ax.containers[0]] == [0.5, 0.0, 0.9]
    assert " inf (not finite)" in [text.get_text() for text in ax.texts]


def test_bar_chart_takes_a_log_axis_only_when_values_span_decades():
    assert _bar_chart("wall_time_s").get_xscale() == "log"  # 0.5 s to 250 s
    assert _bar_chart("final_val_acc").get_xscale() == "linear"  # 0.1 to 0.9


def test_learning_curves_draw_every_trial_in_four_panels():
    fig = charts.learning_curves(SUMMARY, HISTORY)
    panels = fig.axes[:4]
    assert [ax.get_title() for ax in panels] == [title for _, title in charts.PANELS]
    val_acc = panels[3]
    solid = [line for line in val_acc.get_lines() if line.get_linestyle() == "-"]
    assert [list(line.get_ydata()) for line in solid] == [CURVES["r0"]["val_acc"], CURVES["r2"]["val_acc"]]
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["adam", "sgd [diverged]", "rmsprop"]


def test_learning_curves_dash_a_diverged_trial_break_it_at_inf_and_mark_its_last_finite_value():
    val_loss = charts.learning_curves(SUMMARY, HISTORY).axes[1]
    dashed = [line for line in val_loss.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1
    epochs, values = dashed[0].get_data()
    assert list(epochs) == [1, 2] and values[0] == 2.0 and math.isnan(values[1])
    last_seen = [line for line in val_loss.get_lines() if line.get_marker() == "X"]
    assert [(list(line.get_xdata()), list(line.get_ydata())) for line in last_seen] == [([1], [2.0])]


def test_learning_curves_put_a_loss_on_a_log_axis_only_when_it_spans_decades():
    train_loss, val_loss, train_acc, _ = charts.learning_curves(SUMMARY, HISTORY).axes[:4]
    assert train_loss.get_yscale() == "log"  # 0.4 to 1e9
    assert val_loss.get_yscale() == "linear"  # 0.5 to 2.0 once inf is left out
    assert train_acc.get_yscale() == "linear"  # accuracy never: it lives in [0, 1]


def test_convergence_plots_one_trials_train_and_validation_curves():
    fig = charts.convergence(SUMMARY, HISTORY, run_id="r0")
    loss, acc = fig.axes
    assert [list(line.get_ydata()) for line in loss.get_lines()] == [CURVES["r0"]["train_loss"],
                                                                     CURVES["r0"]["val_loss"]]
    assert [list(line.get_ydata()) for line in acc.get_lines()] == [CURVES["r0"]["train_acc"],
                                                                    CURVES["r0"]["val_acc"]]
    assert [text.get_text() for text in loss.get_legend().get_texts()] == ["train_loss", "val_loss"]
    assert fig.texts[0].get_text() == "adam: completed after 3 epochs"


def test_convergence_dashes_a_diverged_trial_and_says_when_a_trial_logged_nothing():
    diverged = charts.convergence(SUMMARY, HISTORY, run_id="r1").axes[0]
    assert {line.get_linestyle() for line in diverged.get_lines() if line.get_marker() != "X"} == {"--"}
    failed = pd.concat([SUMMARY, pd.DataFrame([{"run_id": "r3", "label": "adagrad", "status": "failed",
                                                "epochs": 0}])], ignore_index=True)
    empty = charts.convergence(failed, HISTORY, run_id="r3").axes[0]
    assert not empty.get_lines()
    assert [text.get_text() for text in empty.texts] == ["no metrics logged"]


def _points(ax) -> dict[str, list[tuple[float, float]]]:
    """status -> the (x, y) points its markers sit at."""
    return {c.get_label(): [tuple(p) for p in c.get_offsets()] for c in ax.collections if c.get_label()[0] != "_"}


def test_accuracy_versus_a_number_plots_each_trial_at_its_value_by_status_on_a_log_axis_when_it_spans_decades():
    ax = charts.accuracy_versus(SUMMARY, pd.Series([1e-4, 1e-2, 1e-1], name="lr")).axes[0]
    assert _points(ax) == {"completed": [(1e-4, 0.9)], "diverged": [(1e-2, 0.1)], "early_stopped": [(1e-1, 0.7)]}
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "lr"
    narrow = charts.accuracy_versus(SUMMARY, pd.Series([32, 64, 128], name="batch_size")).axes[0]
    assert narrow.get_xscale() == "linear"  # 4x: no decades to span


def test_accuracy_versus_a_category_puts_each_trial_in_its_sorted_column():
    ax = charts.accuracy_versus(SUMMARY, pd.Series(["sgd", "adam", "sgd"], name="optimizer")).axes[0]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["adam", "sgd"]
    columns = {status: round(points[0][0]) for status, points in _points(ax).items()}  # jitter is +-0.15
    assert columns == {"completed": 1, "diverged": 0, "early_stopped": 1}


def test_accuracy_versus_draws_a_trial_without_a_finite_accuracy_at_zero_and_says_so():
    summary = SUMMARY.assign(final_val_acc=[0.9, math.nan, 0.7])
    ax = charts.accuracy_versus(summary, pd.Series([1e-4, 1e-2, 1e-1], name="lr")).axes[0]
    assert _points(ax)["diverged"] == [(1e-2, 0.0)]
    assert "val_acc not finite: drawn at 0" in [text.get_text() for text in ax.texts]


@pytest.mark.parametrize(("value", "text"), [(64, "64"), (0.01, "0.01"), (0.001, "1e-3"), (0.000316, "3.16e-4"),
                                             (2e6, "2e6"), (math.inf, "inf"), ("0.5", "0.5"), ("adam", "adam")])
def test_format_value_writes_numbers_short(value, text):
    assert charts.format_value(value) == text


def test_normalized_compares_a_param_however_mlflow_wrote_it():
    assert charts.normalized("0.001") == charts.normalized("1e-3") == charts.normalized(0.001) == 0.001
    assert [charts.normalized(v) for v in (None, "None", "", np.nan)] == [None] * 4
    assert charts.normalized(True) == "True"  # a flag stays a flag, not 1.0


def test_safe_name_keeps_letters_digits_dots_and_dashes():
    assert charts.safe_name("sgd lr=1e-3 momentum=0.9") == "sgd_lr_1e-3_momentum_0.9"
    assert charts.safe_name("///") == "trial"
