"""bench/gpu_check.py on the CPU: its reading of results, overlap counting and report against hand-worked cases, and
one real run against a Ray head that declares a fake GPU (`ray start --num-gpus=1`, as tests/test_cluster.py does),
with --allow-cpu, the flag that skips the CUDA assertion in tests only."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.servers import cluster_processes, free_port, stop_cluster

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)


def _results(start: float, epoch_s: list[float], **keys) -> list[dict]:
    """One trial's results as Tune writes them: cumulative time_total_s, timestamp at the end of each epoch."""
    results, total = [], 0.0
    for i, seconds in enumerate(epoch_s):
        total += seconds
        results.append({"training_iteration": i + 1, "time_total_s": total, "timestamp": start + total,
                        **{k: v[i] for k, v in keys.items()}})
    return results


# ---- overlap ----

def test_most_at_once_counts_the_intervals_holding_the_busiest_instant():
    # At t=4, (0, 10), (2, 5) and (4, 12) all hold; at t=10 the first has ended and (10, 11) begins: 2.
    assert gpu_check.most_at_once([(0, 10), (2, 5), (4, 12), (10, 11)], resolution=0) == 3
    assert gpu_check.most_at_once([(0, 1), (1, 2), (2, 3)], resolution=0) == 1  # back to back is one at a time
    assert gpu_check.most_at_once([]) == 0


def test_a_trial_shorter_than_the_timestamps_resolution_still_counts_as_one_at_a_time():
    # Whole-second timestamps: a 0.6 s trial alone, then two 0.8 s trials in the same second.
    assert gpu_check.most_at_once([(100.4, 101.0)]) == 1
    assert gpu_check.most_at_once([(100.2, 101.0), (100.2, 101.0)]) == 1  # overlaps below the resolution do not count
    assert gpu_check.most_at_once([(100.0, 104.0), (101.0, 104.0), (102.5, 103.0)]) == 2


def test_mean_at_once_is_busy_time_over_the_union_of_the_intervals():
    assert gpu_check.mean_at_once([(0, 10), (2, 5), (4, 12), (10, 11)]) == pytest.approx((10 + 3 + 8 + 1) / 12)
    assert gpu_check.mean_at_once([(0, 2), (5, 6)]) == pytest.approx(1.0)  # a gap counts for neither


def test_a_trials_span_ends_at_its_last_result_and_starts_its_training_time_before():
    trials = {"a": _results(100.0, [10.0, 10.0, 10.0]), "b": _results(120.0, [10.0, 10.0])}
    assert gpu_check.spans(trials) == [(100.0, 130.0), (120.0, 140.0)]


def test_trials_one_after_the_other_within_a_timestamps_rounding_do_not_count_as_overlapping():
    # b started 0.3 s after a ended, but whole-second timestamps put its estimated start 0.7 s before a's end.
    first = [{"timestamp": 110, "time_total_s": 10.0}]
    second = [{"timestamp": 120, "time_total_s": 10.7}]
    assert gpu_check.most_at_once(gpu_check.spans({"a": first, "b": second})) == 1
    overlapping = [{"timestamp": 120, "time_total_s": 15.0}]  # started 5 s before a ended: shares the GPU
    assert gpu_check.most_at_once(gpu_check.spans({"a": first, "b": overlapping})) == 2


# ---- the summary and the report ----

def test_summary_gives_epochs_per_hour_over_the_training_span_and_the_peak_memory_per_trial():
    trials = {"a": _results(100.0, [10.0, 10.0, 10.0], gpu_mem_peak_mb=[100.0, 300.0, 200.0]),
              "b": _results(120.0, [10.0, 10.0], gpu_mem_peak_mb=[50.0, 80.0])}
    row = gpu_check.summarize(trials)
    # 5 epochs between t=100 and t=140: 5 / 40 s x 3600 s/h = 450 per hour; (30 + 20) s busy over 40 s: 1.25 at once.
    assert (row["trials"], row["epochs"], row["span_s"]) == (2, 5, 40.0)
    assert row["epochs_per_hour"] == pytest.approx(450.0)
    assert (row["most_at_once"], row["mean_at_once"]) == (2, pytest.approx(1.25))
    assert (row["peak_mem_mb_max"], row["peak_mem_mb_median"]) == (300.0, 190.0)


def test_a_cpu_trial_reports_no_gpu_memory():
    row = gpu_check.summarize({"a": _results(0.0, [1.0], device=["cpu"])})
    assert row["peak_mem_mb_max"] is None


def test_the_report_gives_each_shares_throughput_as_a_ratio_to_one_gpu_per_trial():
    one = {"trials": 4, "epochs": 8, "span_s": 64.0, "epochs_per_hour": 450.0, "most_at_once": 1,
           "mean_at_once": 1.0, "peak_mem_mb_max": 300.0, "peak_mem_mb_median": 190.0, "wall_s": 80.0}
    quarter = {**one, "span_s": 32.0, "epochs_per_hour": 900.0, "most_at_once": 4, "mean_at_once": 3.2}
    lines = gpu_check.report({("quickstart", 1.0): one, ("quickstart", 0.25): quarter}).splitlines()
    assert re.search(r"^quickstart\s+1\s.*\s450\s+1\.00x\s+300, 190$", lines[1]), lines[1]
    assert re.search(r"^quickstart\s+0\.25\s.*\s4\s+3\.20\s+900\s+2\.00x\s+300, 190$", lines[2]), lines[2]


# ---- the CUDA assertion ----

def test_every_epoch_on_cuda_passes_the_device_check():
    assert gpu_check.device_problems({"a": _results(0.0, [1.0, 1.0], device=["cuda", "cuda"])}) == []


def test_a_trial_with_an_epoch_on_the_cpu_fails_the_device_check():
    problems = gpu_check.device_problems({"a": _results(0.0, [1.0, 1.0], device=["cuda", "cpu"]),
                                          "b": _results(0.0, [1.0], device=["cuda"])})
    assert problems == ["trial a: trained on ['cpu', 'cuda'], not only cuda"]


def test_results_without_a_device_fail_the_device_check_rather_than_pass_it():
    problems = gpu_check.device_problems({"a": _results(0.0, [1.0])})
    assert len(problems) == 1 and "no `device` key" in problems[0]


def test_results_are_read_from_every_trials_result_json_in_the_tune_storage(tmp_path):
    for trial, count in (("aaa", 3), ("bbb", 2)):
        folder = tmp_path / "quickstart" / "2026-11-29_12-00-00" / f"trainable_{trial}_00000_lr=0.01"
        folder.mkdir(parents=True)
        lines = [json.dumps({"trial_id": trial, "training_iteration": i + 1}) for i in range(count)]
        (folder / "result.json").write_text("\n".join(lines) + '\n{"trial_id": "aaa", "training_it')  # cut short
    trials = gpu_check.read_trials(tmp_path)
    assert {t: [r["training_iteration"] for r in rs] for t, rs in trials.items()} == {"aaa": [1, 2, 3], "bbb": [1, 2]}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_in_one_line_and_exits_0():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [done.stdout.strip()] and "no CUDA device on this machine" in done.stdout


# ---- one real run on fake GPUs ----

@pytest.fixture(scope="module")
def fake_gpu_head() -> Iterator[str]:
    """A one-node Ray cluster declaring 2 CPUs and one (fake) GPU; its processes are ended by their ids."""
    temp = Path(tempfile.mkdtemp(prefix="rsg", dir="/tmp"))  # unix socket paths must stay under ~107 chars
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAYSWEEP_TEST_CLUSTER": str(temp)}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    argv = [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2",
            "--num-gpus=1", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--include-dashboard=false",
            f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"]

    try:
        started = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        stop_cluster(temp)
        assert not cluster_processes(temp), "processes of the fake-GPU head still alive after stop"


def test_on_fake_gpus_a_quarter_share_overlaps_trials_that_a_whole_gpu_runs_one_at_a_time(fake_gpu_head, tmp_path):
    # Batch 4 (~360 steps per digits epoch) and 12 epochs make each trial outlast the start of the next trial's worker,
    # also when that start lags on a busy machine (with 2 epochs a quick first trial could end before the second
    # worker was up, and Tune would reuse its worker: no overlap). 5 epochs were enough until a worker's first epoch
    # stopped importing torch._dynamo (about 1 s).
    argv = [sys.executable, str(SCRIPT), "--address", fake_gpu_head, "--allow-cpu", "--sweeps", "quickstart",
            "--settings", "1,0.25", "--num-samples", "3", "--max-epochs", "12", "--set", "scheduler=none",
            "--set", "fixed.batch_size=4", "--set", "cpu=0.5"]  # four half-CPU trials fit the head's two CPUs
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {float(m.group(1)): json.loads(m.group(2))
            for m in re.finditer(r"^\[quickstart gpu=([\d.]+)\] (\{.*\})$", done.stdout, re.MULTILINE)}
    assert set(rows) == {1.0, 0.25} and all(r["trials"] == 3 and r["epochs"] == 36 for r in rows.values())
    assert rows[1.0]["most_at_once"] == 1  # one GPU, a whole GPU per trial: one trial at a time
    assert rows[0.25]["most_at_once"] >= 2  # quarters: trials shared the GPU
    assert re.search(r"^quickstart\s+0\.25\s", done.stdout, re.MULTILINE) and "device check skipped" in done.stdout
