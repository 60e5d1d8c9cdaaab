"""The sweep's record of truth: every result the driver received, one JSON line each, in the order it arrived.

Decision (issue #10, "one record that agrees with itself"): a trial's history is what the MLflow callback saw on the
driver, and this log is where it keeps it. The callback appends each result here before it queues the result for
MLflow, so:
- the trial's MLflow run holds the first report of each epoch (the callback logs an epoch once: a restarted trial
  repeats epochs, and MLflow keeps what it had);
- trials.csv (results.trial_rows) reads the same first report of each epoch from here, so the best value, the best
  epoch, the epochs run and the status agree with MLflow, even after a killed worker;
- the sweep run's best and the test evaluation take the best trial's best epoch from the same rows.
Tune's own result.json is not the source: a restarted trial's result.json is copied back from the storage's last
snapshot, which can lack the epoch reported just before the crash. The log is a local file, appended and closed per
line, so a killed driver loses nothing it had received and --resume (on the same machine) appends to it. A trial
the log does not know (a --resume on another machine) falls back to Tune's history.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysweep.status import epoch_of

LOG_FILE = "trial_results.jsonl"
# What a result keeps: ours (metrics, flags) and the few of Tune's that trials.csv shows.
KEYS = ("epoch", "training_iteration", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s",
        "recon_loss", "val_recon_loss", "diverged", "early_stopped", "stopped_epoch", "time_total_s")


@dataclass
class TrialHistory:
    label: str = ""  # the trial's readable label: its MLflow run's name
    results: list[dict[str, Any]] = field(default_factory=list)  # the first report of each epoch, by epoch


def append_start(path: Path, *, trial_id: str, label: str) -> None:
    _append(path, {"event": "start", "trial_id": trial_id, "label": label})


def append_result(path: Path, *, trial_id: str, result: dict[str, Any]) -> None:
    # json writes NaN and inf as the tokens NaN / Infinity and reads them back: a diverged loss survives as NaN.
    kept = {k: _plain(result[k]) for k in KEYS if k in result}
    _append(path, {"event": "result", "trial_id": trial_id, **kept})


def read(path: Path) -> dict[str, TrialHistory]:
    """Each trial's history: its label, and its results with one (the first) report per epoch, in epoch order.

    A line cut by a killed driver (the last one) is skipped."""
    histories: dict[str, TrialHistory] = {}
    if not path.is_file():
        return histories
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        history = histories.setdefault(entry.pop("trial_id"), TrialHistory())
        if entry.pop("event") == "start":
            history.label = history.label or entry["label"]
        elif all(epoch_of(r) != epoch_of(entry) for r in history.results):
            history.results.append(entry)
    for history in histories.values():
        history.results.sort(key=epoch_of)
    return histories


def _append(path: Path, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as handle:  # opened per line: nothing buffered is lost when the driver is killed
        cut = False
        if handle.seek(0, os.SEEK_END) > 0:
            handle.seek(-1, os.SEEK_END)
            cut = handle.read(1) != b"\n"  # a killed driver's half-written line: start on a fresh one
        handle.write((b"\n" if cut else b"") + json.dumps(entry).encode() + b"\n")


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value  # a numpy scalar -> its Python number


@dataclass(frozen=True)
class ExperimentEnd:
    """What the callback knows once Tune's experiment has ended, for the work after fit().

    It travels through a small JSON file beside the results rather than through the callback object, because after
    Tuner.restore Tune calls its own unpickled copy of the callback, which the driver cannot reach.
    """

    interrupted: frozenset[str] = frozenset()  # trials still pending or running at the end: --resume continues them
    unlogged: tuple[str, ...] = ()  # one line per write that could not be logged to MLflow

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"interrupted": sorted(self.interrupted), "unlogged": list(self.unlogged)}))

    @classmethod
    def read(cls, path: Path) -> ExperimentEnd:
        """The state the callback wrote, or an empty one when the experiment never reached its end hook."""
        if not path.is_file():
            return cls()
        saved = json.loads(path.read_text())
        return cls(interrupted=frozenset(saved["interrupted"]), unlogged=tuple(saved["unlogged"]))
