"""What the terminal shows while a sweep runs: one live progress display and one line per finished trial, and none of
Ray's own chatter unless the user asks for it with --verbose.

Four console modes, chosen once by the command line (`console_mode`):
- live: a terminal. One tqdm bar (trials done / total, running, the best so far and its label, elapsed and ETA)
  redrawn in place, with a line per finished trial printed above it;
- plain: not a terminal (CI, nohup, a file). The same lines, no control characters, and a status line at most every
  `status_every_s` seconds;
- quiet: nothing until the summary;
- verbose: Tune's own tables and Ray's worker logs, as Ray prints them.

The mode travels in the environment variable RAYSWEEP_CONSOLE rather than in the callback: after Tuner.restore
(--resume) Tune calls its own unpickled copy of the callback, built by an earlier command line with other flags.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from ray.tune import Callback
from tqdm import tqdm

from raysweep.mlflow_runs import trial_label
from raysweep.status import epoch_of, status_of

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

MODES = ("live", "plain", "quiet", "verbose")
MODE_ENV = "RAYSWEEP_CONSOLE"
LABEL_WIDTH = 60  # characters of a trial's label on the live bar; the finished-trial lines show it whole


def console_mode(*, verbose: bool, quiet: bool, stream: TextIO = sys.stdout) -> str:
    """The mode the flags and the output ask for: a terminal gets the live display, anything else plain lines."""
    if verbose:
        return "verbose"
    if quiet:
        return "quiet"
    return "live" if stream.isatty() else "plain"


class _DropMessages(logging.Filter):
    """Drops records whose message starts with one of `prefixes`; every other record of the logger passes."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_ray(mode: str) -> None:
    """Before Ray starts: keep its notices and its workers' INFO logs off the console unless `mode` is verbose."""
    os.environ[MODE_ENV] = mode
    # Tune's own advice after Ctrl-C (`Tuner.restore(...)`) is wrong for raysweep users, whatever the mode:
    # the summary says to rerun with --resume.
    logging.getLogger("ray.tune.tune").addFilter(_DropMessages("Experiment has been interrupted"))
    # Ray colours the prefix of every line it forwards from its workers and raylets, "(raylet)" warnings such as a
    # nearly full disk included, terminal or not. Into a file or a pipe those escape codes are noise.
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if mode == "verbose":
        return
    # Workers log "Checkpoint successfully created at: <300-character path>" at INFO every epoch. Ray's worker
    # processes read their log level from RAY_LOGGER_LEVEL when they start; a local Ray's raylet inherits this
    # process's environment and hands it to every worker. A user's own setting wins.
    os.environ.setdefault("RAY_LOGGER_LEVEL", "warning")
    # Tune's newer console engine prints its configuration box, the results folder and a TensorBoard hint even at
    # verbose=0; its classic engine prints nothing at verbose=0 (see tune_verbosity).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # A notice, not a warning: Ray found a token and uses it. Its "token authentication is disabled" warning stays.
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        _DropMessages("Token authentication is enabled"))
    # "Creating initial MLflow database tables..." and alembic's migration lines when a sqlite store is new.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def mute_workers() -> None:
    """After fit, unless verbose: stop printing what Ray's workers write. The trials are over; what is left is their
    processes stopping (a worker's SIGTERM traceback while Ray winds down), which raced the summary onto the console.
    Ray removes the same handler itself when it disconnects; a Ray without it is left as it is."""
    if current_mode() == "verbose":
        return
    with contextlib.suppress(ImportError, AttributeError):
        from ray._private.worker import global_worker_stdstream_dispatcher

        global_worker_stdstream_dispatcher.remove_handler("ray_print_logs")


def current_mode() -> str:
    """The mode `quiet_ray` set for this process; plain when nothing set one (e.g. a library caller)."""
    return os.environ.get(MODE_ENV, "plain")


def tune_verbosity(mode: str) -> int:
    """Tune's `verbose`: its tables, trial configs and results only when the user asks for them."""
    return 1 if mode == "verbose" else 0


def stop_reason(last: dict[str, Any], status: str) -> str:
    """Why a finished trial stopped, in the words of trials.csv's stop_reason column."""
    if last.get("stop_reason"):  # the trial reported it itself
        return str(last["stop_reason"])
    reasons = {"failed": "failed", "diverged": "diverged", "interrupted": "interrupted", "completed": "max_epochs"}
    if status in reasons:
        return reasons[status]
    return "patience" if last.get("early_stopped") else "asha"  # early_stopped: ours (patience) or ASHA's


class ProgressCallback(Callback):
    """Drives the console from the driver: Tune calls it after each step and when a trial ends."""

    def __init__(self, *, metric: str, mode: str, max_epochs: int, status_every_s: float = 30.0,
                 stream: TextIO | None = None) -> None:
        self.metric, self.mode, self.max_epochs = metric, mode, max_epochs
        self.status_every_s = status_every_s  # plain mode: at most one status line per this many seconds
        self.stream = stream  # None: sys.stdout at setup (a pickled stream would not survive --resume)
        self._reset()

    def _reset(self) -> None:
        self._console: str = "quiet"
        self._out: TextIO | None = None
        self._bar: tqdm | None = None
        self._total = 0
        self._started = self._last_status = time.monotonic()
        self._done_before = -1  # trials that had ended before this execution started (--resume): not in the ETA
        self._done = self._running = 0
        self._best: dict[str, tuple[float, int]] = {}  # trial_id -> (best value of the metric, epoch reached)
        self._leader: tuple[float, str] | None = None  # the best so far: (value, label)

    def __getstate__(self) -> dict:
        return {"metric": self.metric, "mode": self.mode, "max_epochs": self.max_epochs,
                "status_every_s": self.status_every_s, "stream": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    # Ray Tune hooks.
    def setup(self, total_num_samples: int | None = None, **info) -> None:
        self._console = current_mode()
        self._out = self.stream or sys.stdout
        self._total = max(total_num_samples or 0, 0)
        self._started = self._last_status = time.monotonic()
        if self._console == "live":
            # A terminal that reports no width (a bare pty, some containers) would get a bar cut to nothing.
            size = None if _terminal_width(self._out) > 0 else shutil.get_terminal_size()  # $COLUMNS, else 80
            self._bar = tqdm(total=self._total or None, file=self._out, desc="trials", unit="trial",
                             dynamic_ncols=size is None, ncols=size and size.columns, nrows=size and size.lines,
                             mininterval=0.5,
                             bar_format="{desc} {n_fmt}/{total_fmt} |{bar:20}| {elapsed}<{remaining}{postfix}")

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info) -> None:
        value = result.get(self.metric)
        if not _is_number(value) or result.get("diverged"):  # a diverged trial is never the best
            return
        if trial.trial_id not in self._best or self._better(value, self._best[trial.trial_id][0]):
            self._best[trial.trial_id] = (float(value), epoch_of(result))
        if self._leader is None or self._better(value, self._leader[0]):
            self._leader = (float(value), trial_label(trial.evaluated_params or trial.config))

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._finished(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._finished(trial, failed=True)

    def on_step_end(self, iteration: int, trials: list[Trial], **info) -> None:
        ended = sum(t.status in (t.TERMINATED, t.ERROR) for t in trials)
        if self._done_before < 0:  # the first step of this execution
            self._done_before = ended
            self._resumed(trials)
            if self._bar is not None:
                self._bar.initial = ended  # tqdm's rate, hence its ETA, counts only what this execution did
        self._done, self._running = ended, sum(t.status == t.RUNNING for t in trials)
        if self._bar is not None and time.monotonic() - self._last_status >= 0.5:  # Tune steps many times a second
            self._last_status = time.monotonic()
            self._bar.n = self._done
            self._bar.set_postfix_str(self._status_text().lstrip(", "), refresh=False)  # tqdm puts its own ", "
            self._bar.refresh()  # also moves the elapsed time and the ETA on while no trial ends
        elif self._console == "plain" and time.monotonic() - self._last_status >= self.status_every_s:
            self._last_status = time.monotonic()
            self._print(f"[{self._done}/{self._total or '?'} done] {self._status_text().lstrip(', ')}, "
                        f"{_interval(self._elapsed())} elapsed, ETA {self._eta()}")

    def on_experiment_end(self, trials: list[Trial], **info) -> None:
        if self._bar is not None:
            self._bar.n = sum(t.status in (t.TERMINATED, t.ERROR) for t in trials)  # the last step may be undrawn
            self._bar.close()
            self._bar = None

    # Helpers.
    def _resumed(self, trials: list[Trial]) -> None:
        """After --resume, the best so far includes the trials that ended before: Tune kept each one's best value."""
        for trial in trials:
            value = (trial.metric_analysis.get(self.metric) or {}).get(self.mode)
            if trial.status == trial.TERMINATED and _is_number(value) and not trial.last_result.get("diverged") and (
                    self._leader is None or self._better(value, self._leader[0])):
                self._leader = (float(value), trial_label(trial.evaluated_params or trial.config))

    def _finished(self, trial: Trial, *, failed: bool) -> None:
        last = trial.last_result or {}
        status = status_of(last, max_epochs=self.max_epochs, failed=failed)
        value, epoch = self._best.get(trial.trial_id, (None, None))
        best = f"{self.metric} {value:.4f} (epoch {epoch})" if value is not None else f"{self.metric} -"
        self._done += 1
        if self._bar is not None:
            self._bar.n = self._done  # redrawn below the line
        label = trial_label(trial.evaluated_params or trial.config)
        count = f"[{self._done:>{len(str(self._total))}}/{self._total}]"
        self._print(f"{count} {status:<13} {stop_reason(last, status):<10} {epoch_of(last):>3} epochs  {best}  {label}")

    def _print(self, line: str) -> None:
        if self._console not in ("live", "plain"):
            return
        if self._bar is not None:
            self._bar.write(line, file=self._out)  # above the bar, which is redrawn below it
        else:
            print(line, file=self._out, flush=True)

    def _better(self, value: float, than: float) -> bool:
        return value > than if self.mode == "max" else value < than

    def _status_text(self) -> str:
        text = f", {self._running} running"
        if self._leader is not None:
            value, label = self._leader
            text += f", best {self.metric} {value:.4f} ({label[:LABEL_WIDTH]})"
        return text

    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def _eta(self) -> str:
        done_now = self._done - max(self._done_before, 0)
        if done_now <= 0 or not self._total:
            return "unknown"
        return _interval(self._elapsed() / done_now * (self._total - self._done))


def _terminal_width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0


def _interval(seconds: float) -> str:
    return tqdm.format_interval(max(seconds, 0))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
