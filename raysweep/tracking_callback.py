"""The Ray Tune callback that logs every trial to its own MLflow child run, from the driver.

Workers never talk to MLflow. An MLflow outage never raises into Tune: every write waits in a queue, is retried on
later hooks and at the end, and whatever stays unlogged is listed in `callback.missing` and `unlogged(sweep_run)`
(Tune's own files still hold every result).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from raysweep import trial_log
from raysweep.config import ConfigError, TrialConfig, flatten
from raysweep.mlflow_runs import (
    GIVEN,
    METRICS,
    OPTIONAL_METRICS,
    PARENT,
    ROLE,
    SEED,
    TRIAL_ID,
    SweepRun,
    end_run,
    find_trial_run_id,
    is_permanent,
    one_line,
    param_value,
    search_runs,
    short_http,
    trial_label,
)
from raysweep.status import epoch_of, status_of, stop_reason_of
from raysweep.trainable import SEED_METRICS
from raysweep.trial_log import ExperimentEnd

if TYPE_CHECKING:
    from ray.tune.experiment import Trial


@dataclass(frozen=True)
class _Op:
    """One queued MLflow write for one trial; kind names a `_do_<kind>` method."""

    kind: str  # "open" | "metrics" | "tags" | "end"
    trial_id: str
    what: str  # one line for `missing`
    payload: dict = field(default_factory=dict)


class _NoChildRun(Exception):
    """The trial's child run could not be created, so its later writes have nowhere to go."""


class MlflowTrialCallback(Callback):
    """Logs each trial to a child run of the sweep's parent run, from the driver."""

    def __init__(self, *, sweep_run: SweepRun, max_epochs: int, end_file: Path | None = None,
                 trial_log: Path | None = None, retry_every_s: float = 5.0) -> None:
        self.sweep_run = sweep_run
        self.end_file = end_file  # where on_experiment_end writes its ExperimentEnd; None: nowhere
        self.trial_log = trial_log  # the record of truth (raysweep.trial_log) every result goes to first
        self.max_epochs = max_epochs
        self.retry_every_s = retry_every_s  # seconds before the first retry; doubles up to 60 s
        self._queue: list[_Op] = []  # FIFO, so a trial's run is opened before anything is logged to it
        self._dropped: list[str] = []
        self._opened: set[str] = set()
        self._run_ids: dict[str, str] = {}  # trial_id -> child run id
        self._seed_runs: dict[str, dict[str, str]] = {}  # trial_id -> {seed: nested run id} (repeats)
        self._floor: dict[str, int] = {}  # epochs <= floor were logged before this callback attached
        self._last_step: dict[str, int] = {}
        self._last_result: dict[str, dict] = {}
        self._unfinished: set[str] = set()  # trials pending or running at the end of Tune's latest step
        self._ended: set[str] = set()  # trials that finished or failed
        self._retry_at = 0.0  # time.monotonic() before which a failed queue is not retried
        self._failures = 0  # failed tries in a row
        self._last_error = ""
        self._client: MlflowClient | None = None  # created lazily: Tune pickles callbacks

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    @property
    def missing(self) -> list[str]:
        """One line per write that is not in MLflow (dropped, or still queued after MLflow errors)."""
        if not self._queue:
            return list(self._dropped)
        error = f"MLflow at {self.sweep_run.tracking_uri} failed: {self._last_error}"
        return [*self._dropped, error, *(f"{op.what} not logged" for op in self._queue)]

    def flush(self, *, attempts: int = 3, pause_s: float = 1.0) -> list[str]:
        """Retry the queue now, up to `attempts` times `pause_s` seconds apart; returns `missing`."""
        for attempt in range(attempts):
            self._drain(force=True)
            if not self._queue:
                break
            if attempt + 1 < attempts:
                time.sleep(pause_s)
        return self.missing

    # Ray Tune hooks: each only records and queues; `_drain` makes the MLflow calls.
    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        if trial.trial_id in self._opened:  # a trial restarted after a failure keeps its run
            return
        self._opened.add(trial.trial_id)
        params = {k: param_value(v) for k, v in _every_setting(trial.config).items()}
        label = trial_label(trial.evaluated_params or trial.config)
        if self.trial_log is not None:
            trial_log.append_start(self.trial_log, trial_id=trial.trial_id, label=label)
        self._submit(_Op("open", trial.trial_id, f"trial {trial.trial_id}: child run '{label}'",
                         {"label": label, "params": params, "given": ",".join(sorted(flatten(trial.config)))}))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info) -> None:
        tid = trial.trial_id
        self._last_result[tid] = result
        if self.trial_log is not None:
            trial_log.append_result(self.trial_log, trial_id=tid, result=result)
        step = epoch_of(result)
        if step <= self._last_step.get(tid, 0):  # a restarted trial repeats epochs already logged
            return
        self._last_step[tid] = step
        timestamp = int(time.time() * 1000)
        self._submit(_Op("metrics", tid, f"trial {tid}: metrics of epoch {step}",
                         {"step": step, "timestamp": timestamp, "metrics": _metrics(result)}))
        if SEED_METRICS in result:  # repeats: each seed's own curve goes to a run nested under the configuration's
            seeds = {seed: _metrics(metrics) for seed, metrics in result[SEED_METRICS].items()}
            self._submit(_Op("seeds", tid, f"trial {tid}: seed metrics of epoch {step}",
                             {"step": step, "timestamp": timestamp, "seeds": seeds}))

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._ended.add(trial.trial_id)
        last = self._last(trial)
        status = status_of(last, max_epochs=self.max_epochs, failed=False)  # the rules trials.csv uses
        reason = stop_reason_of(last, max_epochs=self.max_epochs, failed=False)
        self._end(trial, status, "FINISHED", int(last.get("stopped_epoch") or epoch_of(last)), reason)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._ended.add(trial.trial_id)
        self._end(trial, "failed", "FAILED", epoch_of(self._last(trial)), "failed")

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._submit(_Op("tags", trial.trial_id, f"trial {trial.trial_id}: failure count",
                         {"tags": {"raysweep.failures": str(trial.num_failures)}}))

    def on_step_end(self, iteration: int, trials: list[Trial], **info) -> None:
        # Recorded here, not at the end: stopping the experiment's actors may change their trials' statuses.
        self._unfinished = {t.trial_id for t in trials if t.status not in (t.TERMINATED, t.ERROR)}
        self._drain()

    def on_experiment_end(self, trials: list[Trial], **info) -> None:
        cut_short = self._unfinished - self._ended
        for trial in trials:
            if trial.trial_id in cut_short and trial.trial_id in self._opened:
                self._end(trial, "interrupted", "KILLED", epoch_of(self._last(trial)), "interrupted")
        unlogged = self.flush()
        if self.end_file is not None:
            ExperimentEnd(interrupted=frozenset(cut_short), unlogged=tuple(unlogged)).write(self.end_file)

    def _last(self, trial: Trial) -> dict:
        """The trial's latest result: the one this callback saw, else Tune's (a trial restored by --resume)."""
        return self._last_result.get(trial.trial_id) or trial.last_result or {}

    # The queue. `_attempt` is the one wrapper every MLflow call of the callback goes through.
    def _end(self, trial: Trial, status: str, run_status: str, stopped_epoch: int, reason: str) -> None:
        tid = trial.trial_id
        self._submit(_Op("end", tid, f"trial {tid}: end status '{status}'", {
            "status": status, "run_status": run_status, "stopped_epoch": stopped_epoch, "stop_reason": reason}))

    def _submit(self, op: _Op) -> None:
        self._queue.append(op)
        self._drain()

    def _drain(self, *, force: bool = False) -> None:
        if not force and time.monotonic() < self._retry_at:
            return
        while self._queue:
            if not self._attempt(self._queue[0]):
                # Back off while MLflow stays down (a hung server costs a request timeout per try).
                self._failures += 1
                self._retry_at = time.monotonic() + min(self.retry_every_s * 2 ** (self._failures - 1), 60.0)
                return
            self._failures = 0
            self._queue.pop(0)

    def _attempt(self, op: _Op) -> bool:
        """True when op is done (logged, or dropped for good); False to retry it later."""
        try:
            with short_http():
                getattr(self, f"_do_{op.kind}")(op)
            return True
        except Exception as exc:
            if isinstance(exc, _NoChildRun) or is_permanent(exc):
                self._dropped.append(f"{op.what} not logged: {one_line(exc)}")
                return True
            self._last_error = one_line(exc, limit=400)
            return False

    def _mlflow(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.sweep_run.tracking_uri)
        return self._client

    def _run_id(self, trial_id: str) -> str:
        if trial_id not in self._run_ids:
            raise _NoChildRun(f"trial {trial_id} has no child run")
        return self._run_ids[trial_id]

    def _do_open(self, op: _Op) -> None:
        client, tid = self._mlflow(), op.trial_id
        # Looking up first makes a retry after a timed-out create, and a resumed sweep, reuse the run.
        run_id = find_trial_run_id(client, self.sweep_run, tid)
        if run_id is None:
            tags = {ROLE: "trial", PARENT: self.sweep_run.run_id, TRIAL_ID: tid, GIVEN: op.payload["given"]}
            run = client.create_run(self.sweep_run.experiment_id, run_name=op.payload["label"], tags=tags)
            run_id, logged = run.info.run_id, {}
        else:
            run = client.get_run(run_id)
            logged = run.data.params
            self._floor[tid] = _last_logged_step(client, run)
            self._last_step[tid] = max(self._last_step.get(tid, 0), self._floor[tid])
            client.update_run(run_id, status="RUNNING")
        self._run_ids[tid] = run_id
        params = [Param(k, v) for k, v in op.payload["params"].items() if k not in logged]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run_id, params=params[start : start + 100])

    def _do_metrics(self, op: _Op) -> None:
        run_id, step = self._run_id(op.trial_id), op.payload["step"]
        if step <= self._floor.get(op.trial_id, 0):  # queued before we learnt it was logged already
            return
        timestamp = op.payload["timestamp"]
        metrics = [Metric(k, v, timestamp, step) for k, v in op.payload["metrics"].items()]
        self._mlflow().log_batch(run_id, metrics=metrics)

    def _do_tags(self, op: _Op) -> None:
        tags = [RunTag(k, v) for k, v in op.payload["tags"].items()]
        self._mlflow().log_batch(self._run_id(op.trial_id), tags=tags)

    def _do_end(self, op: _Op) -> None:
        p = op.payload
        for run_id in [*self._seed_runs_of(op.trial_id).values(), self._run_id(op.trial_id)]:
            end_run(self._mlflow(), run_id, p["status"], p["run_status"], p["stopped_epoch"], p.get("stop_reason"))

    def _do_seeds(self, op: _Op) -> None:
        step = op.payload["step"]
        if step <= self._floor.get(op.trial_id, 0):
            return
        runs = self._seed_runs_of(op.trial_id)
        for seed, values in op.payload["seeds"].items():
            if seed not in runs:
                runs[seed] = self._open_seed_run(op.trial_id, seed)
            metrics = [Metric(k, v, op.payload["timestamp"], step) for k, v in values.items()]
            self._mlflow().log_batch(runs[seed], metrics=metrics)

    def _seed_runs_of(self, trial_id: str) -> dict[str, str]:
        """The trial's seed runs (seed -> run id), found in MLflow the first time (a resumed sweep reuses them)."""
        if trial_id not in self._seed_runs:
            parent = self._run_id(trial_id)
            found = search_runs(self._mlflow(), self.sweep_run.experiment_id,
                                f"tags.`{PARENT}` = '{parent}' AND tags.`{ROLE}` = 'seed'")
            self._seed_runs[trial_id] = {run.data.tags[SEED]: run.info.run_id for run in found}
        return self._seed_runs[trial_id]

    def _open_seed_run(self, trial_id: str, seed: str) -> str:
        parent = self._run_id(trial_id)
        tags = {ROLE: "seed", PARENT: parent, SEED: seed}  # no trial id: only the configuration's run is the trial's
        run = self._mlflow().create_run(self.sweep_run.experiment_id, run_name=f"seed {seed}", tags=tags)
        self._mlflow().log_batch(run.info.run_id, params=[Param("seed", seed)])
        return run.info.run_id


def _last_logged_step(client: MlflowClient, run) -> int:
    keys = [k for k in run.data.metrics if k in METRICS + OPTIONAL_METRICS]
    steps = [m.step for k in keys for m in client.get_metric_history(run.info.run_id, k)]
    return max(steps, default=0)


def _every_setting(config: dict) -> dict[str, Any]:
    """Every trial setting, defaults included, so the run alone rebuilds the trial; a config that is no TrialConfig
    (another trainable's) is logged as Tune gave it."""
    try:
        return TrialConfig.from_dict(config).to_dict()
    except (ConfigError, TypeError):
        return flatten(config)


def _metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of a result that become MLflow metrics: ours, and their standard deviation over seeds."""
    keys = METRICS + OPTIONAL_METRICS
    return {k: float(result[k]) for k in keys + tuple(f"{k}_std" for k in keys) if _is_number(result.get(k))}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
