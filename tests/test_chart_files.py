"""Writing the report's charts: every chart once, in its file, whether one process draws them or several."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest

from raysweep import chart_files
from tests.test_charts import HISTORY, SUMMARY, _is_png

PARAMS = pd.DataFrame({"lr": [1e-4, 1e-2, 1e-1], "optimizer": ["adam", "sgd", "rmsprop"]})


def test_write_charts_writes_every_chart_as_a_png(tmp_path):
    summary = SUMMARY.assign(label=["a b", "a_b", "rmsprop"])  # two labels that make the same file name
    paths = chart_files.write_charts(summary, HISTORY, params=PARAMS, out_dir=tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "training_time.png", "final_val_loss.png", "final_val_acc.png", "learning_curves.png",
        "convergence/a_b.png", "convergence/a_b_1.png", "convergence/rmsprop.png",
        "final_val_acc_vs_lr.png", "final_val_acc_vs_optimizer.png"]
    assert all(_is_png(path) for path in paths)


def test_charts_drawn_by_three_processes_are_the_files_one_process_draws(tmp_path, monkeypatch):
    started = []
    popen = subprocess.Popen

    def counting_popen(*args, **kwargs):
        started.append(args[0])
        return popen(*args, **kwargs)

    alone = chart_files.write_charts(SUMMARY, HISTORY, params=PARAMS, out_dir=tmp_path / "alone", processes=1)
    assert not started
    monkeypatch.setattr(subprocess, "Popen", counting_popen)
    shared = chart_files.write_charts(SUMMARY, HISTORY, params=PARAMS, out_dir=tmp_path / "shared", processes=3)
    assert len(started) == 2  # this process draws its own share beside two children
    assert [p.relative_to(tmp_path / "shared") for p in shared] == [p.relative_to(tmp_path / "alone") for p in alone]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(alone, shared, strict=True))


def test_a_failing_chart_process_is_reported_with_its_error(tmp_path, monkeypatch):
    jobs = chart_files.chart_jobs(SUMMARY, HISTORY, params=PARAMS, out_dir=tmp_path)
    jobs[1] = ("no_such_chart", {}, tmp_path / "x.png")  # with 2 processes, job 1 is the child's
    monkeypatch.setattr(chart_files, "chart_jobs", lambda *args, **kwargs: jobs)
    with pytest.raises(RuntimeError, match="a chart-drawing process failed: AttributeError: .*no_such_chart"):
        chart_files.write_charts(SUMMARY, HISTORY, params=PARAMS, out_dir=tmp_path, processes=2)


def test_by_default_a_process_draws_at_least_charts_per_process_charts(monkeypatch, tmp_path):
    monkeypatch.setattr(chart_files.os, "cpu_count", lambda: 64)
    started = []

    def start_child(jobs, jobs_file):
        started.append(len(jobs))
        return subprocess.Popen(["true"], stderr=subprocess.PIPE, text=True)

    monkeypatch.setattr(chart_files, "_start_child", start_child)
    monkeypatch.setattr(chart_files, "draw", lambda jobs: None)
    summary = pd.concat([SUMMARY] * 10, ignore_index=True).assign(run_id=[f"r{i}" for i in range(30)],
                                                                   label=[f"t{i}" for i in range(30)])
    chart_files.write_charts(summary, HISTORY, params=PARAMS, out_dir=tmp_path)  # 4 + 30 + 2 charts
    assert len(started) + 1 == 5 and min(started) >= chart_files.CHARTS_PER_PROCESS - 1


def test_helpers_started_early_draw_the_next_charts_and_no_process_is_started_then(tmp_path, monkeypatch):
    alone = chart_files.write_charts(SUMMARY, HISTORY, params=PARAMS, out_dir=tmp_path / "alone", processes=1)
    chart_files.start_helpers(2)
    helpers = list(chart_files._helpers)
    started = []
    popen = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda *args, **kwargs: started.append(args) or popen(*args, **kwargs))
    shared = chart_files.write_charts(SUMMARY, HISTORY, params=PARAMS, out_dir=tmp_path / "shared", processes=2)
    assert not started  # the waiting helper drew the child's share
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(alone, shared, strict=True))
    assert [helper.wait(timeout=60) for helper in helpers] == [0, 0]  # the one not needed was released and exited
    assert not chart_files._helpers


def test_released_helpers_exit_without_drawing():
    chart_files.start_helpers(1)
    helper = chart_files._helpers[0]
    chart_files.release_helpers()
    assert helper.wait(timeout=60) == 0 and not chart_files._helpers
