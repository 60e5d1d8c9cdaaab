"""The console while a sweep runs: a line per finished trial, a status line at most every 30 s in a file, a live bar on
a terminal, and none of Ray's chatter. The callback is driven with Ray Tune's own Trial objects; the line budget and
the live bar are then checked on real sweeps (real local Ray, real MLflow store), once into a file, once on a pty."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pickle
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time

import pytest
from ray.tune.experiment import Trial

from raysweep import progress
from raysweep.progress import ProgressCallback, console_mode, stop_reason
from tests.sweep_runs import REPO, command, sweep_env

QUICKSTART = REPO / "sweeps" / "quickstart.py"
NOISE = ["Checkpoint successfully created", "Token authentication is enabled", "Configuration for experiment",
         "To visualize your results with TensorBoard", "Trial status:", "Traceback", "Tuner.restore",
         "Creating initial MLflow database tables", "View detailed results here"]


def make_trial(lr: float, optimizer: str = "adam") -> Trial:
    return Trial("trainable", config={"lr": lr, "optimizer": {"optimizer": optimizer}}, stub=True,
                 evaluated_params={"lr": lr, "optimizer/optimizer": optimizer})


def report(callback: ProgressCallback, trial: Trial, trials: list[Trial], values: list[float], **last) -> None:
    """The trial reports one val_acc per epoch, then Tune marks it TERMINATED and tells the callback."""
    trial.set_status(Trial.RUNNING)
    for epoch, value in enumerate(values, start=1):
        result = {"val_acc": value, "epoch": epoch, "training_iteration": epoch}
        trial.update_last_result(result)
        callback.on_trial_result(iteration=0, trials=trials, trial=trial, result=result)
    trial.update_last_result({**trial.last_result, **last})
    trial.set_status(Trial.TERMINATED)
    callback.on_trial_complete(iteration=0, trials=trials, trial=trial)


@pytest.fixture()
def plain(monkeypatch):
    """A callback in plain mode (not a terminal) writing into a StringIO, with a clock the test moves."""
    clock = {"now": 1000.0}
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock["now"])
    monkeypatch.setenv(progress.MODE_ENV, "plain")
    out = io.StringIO()
    callback = ProgressCallback(metric="val_acc", mode="max", max_epochs=3, stream=out)
    callback.setup(total_num_samples=2)
    return callback, out, clock


def test_each_finished_trial_gets_one_line_with_its_label_status_reason_epochs_and_best(plain):
    callback, out, _ = plain
    first, second = make_trial(0.01), make_trial(0.5, "sgd")
    trials = [first, second]
    report(callback, first, trials, [0.5, 0.9, 0.8])  # best at epoch 2, all 3 epochs: completed
    report(callback, second, trials, [0.3])  # 1 of 3 epochs: ASHA stopped it
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\[1/2\] completed +max_epochs +3 epochs +val_acc 0\.9000 \(epoch 2\) +adam lr=0\.01",
                        lines[0])
    assert re.fullmatch(r"\[2/2\] early_stopped +asha +1 epochs +val_acc 0\.3000 \(epoch 1\) +sgd lr=0\.5",
                        lines[1])


def test_a_file_gets_at_most_one_status_line_per_30_seconds(plain):
    callback, out, clock = plain
    trial = make_trial(0.01)
    trial.set_status(Trial.RUNNING)
    for _ in range(100):  # one Tune step per second for 100 s
        clock["now"] += 1.0
        callback.on_step_end(iteration=0, trials=[trial])
    status = [line for line in out.getvalue().splitlines() if "done]" in line]
    assert len(status) == 3  # at 30, 60 and 90 s
    assert status[0] == "[0/2 done] 1 running, 00:30 elapsed, ETA unknown"
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out.getvalue())  # no \r, no escape codes


def test_the_status_line_names_the_best_so_far_and_an_eta_from_the_trials_done(plain):
    callback, out, clock = plain
    first, second = make_trial(0.01), make_trial(0.5, "sgd")
    trials = [first, second]
    callback.on_step_end(iteration=0, trials=trials)  # the experiment starts: nothing done yet
    clock["now"] += 40.0
    report(callback, first, trials, [0.7, 0.95])
    second.set_status(Trial.RUNNING)
    callback.on_step_end(iteration=0, trials=trials)
    status = out.getvalue().splitlines()[-1]
    # 1 of 2 trials took 40 s, so the other is due in 40 s.
    assert status == "[1/2 done] 1 running, best val_acc 0.9500 (adam lr=0.01), 00:40 elapsed, ETA 00:40"


def test_a_diverged_trial_is_never_the_best_so_far(plain):
    callback, out, clock = plain
    sane, diverged = make_trial(0.01), make_trial(10.0)
    trials = [sane, diverged]
    report(callback, sane, trials, [0.6])
    diverged.set_status(Trial.RUNNING)
    result = {"val_acc": 0.99, "epoch": 1, "diverged": True}
    callback.on_trial_result(iteration=0, trials=trials, trial=diverged, result=result)
    clock["now"] += 31
    callback.on_step_end(iteration=0, trials=trials)
    assert "best val_acc 0.6000 (adam lr=0.01)" in out.getvalue().splitlines()[-1]


@pytest.mark.parametrize("last,status,reason", [
    ({"epoch": 3}, "completed", "max_epochs"),
    ({"epoch": 1}, "early_stopped", "asha"),
    ({"epoch": 2, "early_stopped": True}, "early_stopped", "patience"),
    ({"epoch": 2, "diverged": True}, "diverged", "diverged"),
    ({"epoch": 2}, "failed", "failed"),
    ({"epoch": 2, "stop_reason": "patience"}, "early_stopped", "patience"),  # the trial's own word wins
])
def test_the_stop_reason_follows_the_status_and_the_trials_last_result(last, status, reason):
    assert stop_reason(last, status) == reason


def test_quiet_and_verbose_print_nothing_of_their_own(monkeypatch):
    for mode in ("quiet", "verbose"):
        monkeypatch.setenv(progress.MODE_ENV, mode)
        out = io.StringIO()
        callback = ProgressCallback(metric="val_acc", mode="max", max_epochs=3, stream=out)
        callback.setup(total_num_samples=1)
        trial = make_trial(0.01)
        report(callback, trial, [trial], [0.5, 0.6, 0.7])
        callback.on_step_end(iteration=0, trials=[trial])
        assert out.getvalue() == ""


def test_the_callback_survives_tunes_pickling_and_takes_the_new_commands_mode(monkeypatch):
    # Tune pickles its callbacks with the Tuner; --resume unpickles them in a later command with other flags.
    monkeypatch.setenv(progress.MODE_ENV, "plain")
    callback = ProgressCallback(metric="val_loss", mode="min", max_epochs=5, stream=io.StringIO())
    callback.setup(total_num_samples=4)
    restored = pickle.loads(pickle.dumps(callback))
    monkeypatch.setenv(progress.MODE_ENV, "quiet")
    restored.setup(total_num_samples=4)
    assert (restored.metric, restored.mode, restored.max_epochs, restored._console) == ("val_loss", "min", 5, "quiet")


def test_the_flags_and_the_output_choose_the_mode():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert console_mode(verbose=False, quiet=False, stream=Terminal()) == "live"
    assert console_mode(verbose=False, quiet=False, stream=io.StringIO()) == "plain"
    assert console_mode(verbose=False, quiet=True, stream=Terminal()) == "quiet"
    assert console_mode(verbose=True, quiet=False, stream=io.StringIO()) == "verbose"


# ------------------------------------------------------------------------------------------------ real sweeps
def test_a_real_sweep_into_a_file_stays_within_the_line_budget_and_shows_no_ray_chatter(tmp_path):
    trials = 4
    started = time.monotonic()
    with open(tmp_path / "out.txt", "w") as out:  # stdout and stderr into one file, as `make demo > log 2>&1`
        done = subprocess.run(command(QUICKSTART, tmp_path, "--num-samples", str(trials), "--max-epochs", "3"),
                              cwd=tmp_path, env=sweep_env(tmp_path), stdout=out, stderr=subprocess.STDOUT, timeout=900)
    seconds = time.monotonic() - started
    text = (tmp_path / "out.txt").read_text()
    assert done.returncode == 0, text[-3000:]
    lines = text.splitlines()
    finished = [line for line in lines if re.match(r"\[ *\d+/4\] ", line)]
    assert len(finished) == trials
    # The quickstart's 20 trials must fit in 40 lines: a line per trial, the summary, a status line per 30 s.
    assert len(lines) <= trials + 10 + seconds // 30, text
    assert [noise for noise in NOISE if noise in text] == []
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text)  # plain lines: no \r, no colours
    assert "best trial: " in text and "--backend-store-uri sqlite:///" in text


def test_on_a_terminal_the_live_line_is_redrawn_in_place(tmp_path):
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # rows, columns, as a terminal
    driver = subprocess.Popen(command(QUICKSTART, tmp_path, "--num-samples", "3", "--max-epochs", "2"), cwd=tmp_path,
                              env=sweep_env(tmp_path), stdin=secondary, stdout=secondary,
                              stderr=secondary, close_fds=True)
    os.close(secondary)
    chunks = []
    while True:  # read until the driver exits and the pty is drained
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: every writer has closed the pty
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif driver.poll() is not None:
            break
    driver.wait(timeout=60)
    os.close(main)
    text = b"".join(chunks).decode(errors="replace")
    assert driver.returncode == 0, text[-3000:]
    # tqdm redraws the bar with a carriage return; the count moves from 0/3 to 3/3 on the same line.
    redraws = [part for part in re.split(r"[\r\n]", text) if part.startswith("trials ")]
    counts = {m.group(1) for part in redraws if (m := re.match(r"trials (\d)/3", part))}
    assert "\r" in text and {"0", "3"} <= counts, redraws
    assert len(set(redraws)) >= 3  # the elapsed time and the counts moved on between redraws
    assert len(re.findall(r"\[\d/3\] (completed|early_stopped)", text)) == 3  # the finished lines, above the bar
    assert [noise for noise in NOISE if noise in text] == []


def test_quiet_ray_drops_ray_notices_but_keeps_its_warnings(monkeypatch, caplog):
    for name in (progress.MODE_ENV, "RAY_LOGGER_LEVEL", "RAY_AIR_NEW_OUTPUT"):
        monkeypatch.delenv(name, raising=False)
    progress.quiet_ray("plain")
    # Ray's workers start with the driver's environment: INFO lines such as "Checkpoint successfully created" stay
    # in the workers; Tune's classic engine prints nothing at verbose=0.
    assert (os.environ["RAY_LOGGER_LEVEL"], os.environ["RAY_AIR_NEW_OUTPUT"]) == ("warning", "0")
    assert progress.tune_verbosity(progress.current_mode()) == 0
    token = logging.getLogger("ray._private.authentication.authentication_token_setup")
    tune_log = logging.getLogger("ray.tune.tune")
    with caplog.at_level(logging.WARNING):
        token.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.")
        token.warning("Token authentication is disabled for this Ray cluster. Anyone with network access ...")
        tune_log.warning("Experiment has been interrupted, but the most recent state was saved.\n"
                         "Resume experiment with: Tuner.restore(path=...)")
        tune_log.warning("Trial xyz failed 3 times")
    assert [r.getMessage()[:40] for r in caplog.records] == ["Token authentication is disabled for thi",
                                                             "Trial xyz failed 3 times"]


def test_verbose_leaves_ray_as_it_is_and_a_users_own_setting_wins(monkeypatch):
    for name in ("RAY_LOGGER_LEVEL", "RAY_AIR_NEW_OUTPUT"):
        monkeypatch.delenv(name, raising=False)
    progress.quiet_ray("verbose")
    assert "RAY_LOGGER_LEVEL" not in os.environ and "RAY_AIR_NEW_OUTPUT" not in os.environ
    assert progress.tune_verbosity(progress.current_mode()) == 1
    monkeypatch.setenv("RAY_LOGGER_LEVEL", "debug")
    progress.quiet_ray("quiet")
    assert os.environ["RAY_LOGGER_LEVEL"] == "debug"


def test_after_resume_the_best_so_far_counts_trials_that_ended_before_and_the_eta_does_not(plain):
    callback, out, clock = plain
    earlier, running = make_trial(0.01), make_trial(0.5, "sgd")
    for value in (0.5, 0.93, 0.7):  # ended before this execution; Tune restored it with its metric history
        earlier.update_last_result({"val_acc": value, "epoch": 3, "training_iteration": 3})
    earlier.set_status(Trial.TERMINATED)
    running.set_status(Trial.RUNNING)
    callback.on_step_end(iteration=0, trials=[earlier, running])
    clock["now"] += 31
    callback.on_step_end(iteration=0, trials=[earlier, running])
    assert out.getvalue().splitlines()[-1] == ("[1/2 done] 1 running, best val_acc 0.9300 (adam lr=0.01), 00:31 "
                                               "elapsed, ETA unknown")  # nothing ended in this execution yet


def test_what_workers_print_reaches_a_file_as_plain_lines_until_fit_ends():
    # In a process of its own: a ray.init in this one would leave Ray's token auth set for the rest of the session,
    # and the in-process Ray of a later test could no longer start work on the token-less test cluster.
    # Its stdout is a pipe, as `make demo > log` makes it a file.
    script = textwrap.dedent("""
        import ray
        from ray._private.worker import global_worker_stdstream_dispatcher
        from raysweep import progress
        from tests.servers import wait_for

        progress.quiet_ray("plain")  # as run.cli does before Ray starts
        delivered = []  # what reached this driver from the workers, shown or not
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=True)
        global_worker_stdstream_dispatcher.add_handler("probe", lambda data: delivered.extend(data["lines"]))

        @ray.remote
        def say(text):
            print(text, flush=True)

        for text in ("during-fit", "after-fit"):
            ray.get(say.remote(text))
            wait_for(lambda: text in delivered, timeout_s=60, what=f"{text!r} forwarded to the driver")
            if text == "during-fit":
                progress.mute_workers()  # as run.run does once fit returns
        print("forwarded:", *delivered, flush=True)
        ray.shutdown()
    """)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # the script's quiet_ray sets the mode
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    shown = [line for line in done.stdout.splitlines() if not line.startswith("forwarded:")]
    assert "forwarded: during-fit after-fit" in done.stdout  # both lines reached the driver...
    assert any("during-fit" in line for line in shown)  # ...and only the one before fit ended was printed
    assert not any("after-fit" in line for line in shown)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", done.stdout)  # Ray's colour codes in a file are noise
