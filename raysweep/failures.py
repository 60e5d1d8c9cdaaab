"""A sweep that fails after its MLflow run opened: every open run of it is ended, the traceback is kept, and the user
reads one line. Nothing is ever left RUNNING.

run.run wraps everything after the sweep run opens in `failing_cleanly`; run.main prints the SweepFailedError's
message and exits 1. Ctrl-C that escapes Tune's own handling ends the runs KILLED and goes on up (exit 130).
"""

from __future__ import annotations

import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.tracking import MlflowClient

from raysweep.mlflow_runs import PARENT, STATUS, SweepRun, child_runs, end_run, one_line, search_runs, short_http

ERROR_LOG = "raysweep-error.log"  # in the results folder: the traceback of a sweep that failed after it started


class SweepFailedError(Exception):
    """The sweep failed after its run opened; every open run was ended. The message is one line for the user."""


@contextmanager
def failing_cleanly(sweep_run: SweepRun, *, log_file: Path) -> Iterator[None]:
    """Whatever escapes the block ends every open run of the sweep: FAILED for an exception, whose traceback goes to
    log_file (a temporary file if that cannot be written) and which becomes a SweepFailedError with one line;
    KILLED, tagged interrupted, for Ctrl-C, which goes on up."""
    try:
        yield
    except KeyboardInterrupt:
        end_open_runs(sweep_run, run_status="KILLED", status="interrupted")
        raise
    except Exception as exc:
        where = _write_traceback(log_file, fallback=f"raysweep-error-{sweep_run.run_id}.log")
        problems = end_open_runs(sweep_run, run_status="FAILED", status="failed")
        ended = "its MLflow runs were ended FAILED" if not problems else f"MLflow runs not all ended: {problems[0]}"
        raise SweepFailedError(f"the sweep failed after it started: {_root_cause(exc)}; {ended}; "
                               f"full traceback in {where}") from None


def _root_cause(exc: BaseException) -> str:
    """The innermost error, as "Type: message": Tune wraps a callback's error in a TuneError whose message is the
    whole formatted traceback, whose last line names it."""
    while exc.__cause__ is not None or (exc.__context__ is not None and not exc.__suppress_context__):
        exc = exc.__cause__ or exc.__context__
    lines = [line for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Traceback (most recent call last)"):
        return one_line(Exception(lines[-1]))
    return f"{type(exc).__name__}: {one_line(exc)}"


def _write_traceback(log_file: Path, *, fallback: str) -> Path:
    text = traceback.format_exc()
    for path in (log_file, Path(tempfile.gettempdir()) / fallback):  # the results folder may be what failed
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return path
        except OSError:
            continue
    return Path("(nowhere: neither the results folder nor the temporary folder could be written)")


def end_open_runs(sweep_run: SweepRun, *, run_status: str, status: str) -> list[str]:
    """End the sweep's unfinished child runs (tagged `status`, also as stop reason) and the sweep run itself, all
    with run_status. Unfinished: RUNNING, or ended `interrupted` (Tune's cleanup after the failure calls the trial
    callback's end of experiment, which takes the stop for an interruption). Returns one line per failure; never
    raises for MLflow errors."""
    client, failures = MlflowClient(sweep_run.tracking_uri), []
    children = child_runs(client, sweep_run, status=None, on_error=failures)
    trial_ids = {child.info.run_id for child in children}
    try:  # with repeats, each seed's run is nested under its configuration's trial run
        with short_http():
            running = search_runs(client, sweep_run.experiment_id, "attributes.status = 'RUNNING'")
        children += [run for run in running if run.data.tags.get(PARENT) in trial_ids]
    except Exception as exc:
        failures.append(f"listing seed runs left RUNNING: {one_line(exc)}")
    for child in children:
        if child.info.status != "RUNNING" and child.data.tags.get(STATUS) != "interrupted":
            continue
        try:
            with short_http():
                end_run(client, child.info.run_id, status=status, run_status=run_status, stop_reason=status)
        except Exception as exc:
            failures.append(f"trial run {child.info.run_id}: {one_line(exc)}")
    try:
        with short_http():
            client.set_terminated(sweep_run.run_id, status=run_status)
    except Exception as exc:
        failures.append(f"sweep run {sweep_run.run_id}: {one_line(exc)}")
    return failures
