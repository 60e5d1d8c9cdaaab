"""`python -m raysweep.reproduce RUN_ID [--tracking-uri URI] [--data-dir PATH]`: retrain one trial from its MLflow
run alone, outside Ray, and print each epoch's val_acc beside the recorded one, then a verdict.

The record (raysweep.trial_record) gives the trial's settings, its val_acc per epoch, and from the sweep run the
data split (dataset, val_size, val_pick, subset, seed), the data checksum and the per-trial `cpu` and `gpu`. The data
is loaded as raysweep.run loads it, torch gets the trainable's thread count, and raysweep.train.run_trial retrains it.
A configuration with seed runs (raysweep.role=seed) is reproduced seed by seed.

Exit codes: 0 the record is reproduced within the tolerance, 1 it is not, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from raysweep.config import TrialConfig
from raysweep.mlflow_runs import local_store_folder
from raysweep.trial_record import METRIC, RecordError, find_records, split_of

MATCHED, MISMATCHED, USAGE_ERROR = 0, 1, 2
# On the device and thread count the trial ran with, training is deterministic (run_trial seeds every random draw and
# the CPU kernels sum in a fixed order), so any difference at all means the record was not reproduced. The thread
# count matters: 1 vs 2 threads moved an MNIST MLP's val_acc by up to 0.0006 (3 of 5,000 images; SGD, 10,000 images, 4
# epochs). On another device the kernels round differently too, which nudges a few borderline validation images; 0.01
# (1 point) allows ~16x that while a different setting or data set usually moves it by whole points. CUDA vs CPU is
# not measured (no GPU where this was written).
SAME_SETUP_TOLERANCE = 0.0
OTHER_DEVICE_TOLERANCE = 0.01  # absolute val_acc, i.e. 1 point


class ReproduceError(Exception):
    """Bad input: an unknown run, a run that is not a trial, data that is missing or differs from the record."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse prints usage on two lines; the contract is one line
        fail(f"{message} (see --help)")


def fail(message: str) -> NoReturn:
    print(f"raysweep.reproduce: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


def loaded_checksum(dataset: Any) -> str | None:
    """sha256 of the data files this load read, as the sweep run's `data.sha256` records it (None: unknown)."""
    return getattr(dataset, "sha256", None) or None


def check_data(recorded: str | None, loaded: str | None) -> str:
    """One line on the data's checksum; raises ReproduceError when the files differ from those the sweep read."""
    if recorded is None:
        return "data checksum: the sweep run records none (`data.sha256`); not checked"
    if loaded is None:
        return "data checksum: this raysweep cannot compute it yet; not checked"
    if loaded != recorded:
        raise ReproduceError(f"data files differ from the record: sha256 {loaded[:12]}... here, but the sweep run "
                             f"recorded data.sha256={recorded[:12]}...; use the same files (--data-dir)")
    return f"data checksum: sha256 {loaded[:12]}... matches the record"


@dataclass(frozen=True)
class Setup:
    """Where the trial ran, as the sweep run records it (its per-trial `gpu` and `cpu`), and where it runs now."""

    recorded_device: str
    device: str
    threads: int  # torch's intra-op threads: the trainable sets max(1, int(cpu)), and so does this

    @property
    def same(self) -> bool:
        return self.device == self.recorded_device

    @property
    def tolerance(self) -> float:
        return SAME_SETUP_TOLERANCE if self.same else OTHER_DEVICE_TOLERANCE


def setup_of(split: dict[str, Any]) -> Setup:
    import torch

    # The trainable trains on CUDA when given a GPU share: the resolved share (gpu_per_trial) when the record has it;
    # `gpu` itself is "auto" in sweeps that leave it to the cluster.
    share = split.get("gpu_per_trial", split["gpu"])
    recorded = "cuda" if share != "auto" and float(share) > 0 else "cpu"
    device = recorded if recorded == "cpu" or torch.cuda.is_available() else "cpu"
    return Setup(recorded_device=recorded, device=device, threads=max(1, int(float(split["cpu"]))))


def retrain(config: TrialConfig, dataset: Any, *, device: str, epochs: int) -> dict[int, float]:
    """epoch -> val_acc of the trial trained again by run_trial, up to `epochs` (where the record ends: ASHA may have
    stopped it there) or until it stops by itself (early stopping, divergence)."""
    from raysweep.train import run_trial

    reproduced = {}
    for metrics, _ in run_trial(config, dataset, device=device):
        reproduced[metrics["epoch"]] = metrics[METRIC]
        if metrics["epoch"] >= epochs:
            break
    return reproduced


def table(recorded: dict[int, float], reproduced: dict[int, float]) -> list[str]:
    """One line per epoch: the recorded val_acc, the reproduced one and their difference, every digit shown."""
    lines = [f"{'epoch':>5}  {'recorded ' + METRIC:<22}  {'reproduced ' + METRIC:<22}  difference"]
    for epoch in sorted(recorded.keys() | reproduced.keys()):
        old, new = recorded.get(epoch), reproduced.get(epoch)
        difference = f"{new - old:.3g}" if old is not None and new is not None else "-"
        old_text = "(not recorded)" if old is None else repr(old)
        new_text = "(not trained)" if new is None else repr(new)
        lines.append(f"{epoch:>5}  {old_text:<22}  {new_text:<22}  {difference}")
    return lines


def verdict(recorded: dict[int, float], reproduced: dict[int, float], *, setup: Setup) -> tuple[bool, str]:
    """(matched, one line): identical, within or outside the tolerance, with the largest difference."""
    missing = sorted(recorded.keys() - reproduced.keys())
    if missing:
        return False, (f"differs: the retrained trial stopped after epoch {max(reproduced, default=0)}, but the "
                       f"record goes on to epoch {missing[-1]}")
    gaps = {epoch: abs(reproduced[epoch] - value) for epoch, value in recorded.items()}
    worst = max(gaps, key=lambda epoch: (gaps[epoch], -epoch))
    where = f"{setup.device}, {setup.threads} thread(s)"
    if setup.same and gaps[worst] == 0:
        return True, f"identical: every epoch's {METRIC} equals the record exactly ({where}, as the trial ran)"
    why = ("on the trial's own device and thread count training is deterministic" if setup.same else
           f"trained on {setup.device} where the trial ran on {setup.recorded_device}, whose kernels round "
           "differently")
    within = gaps[worst] <= setup.tolerance
    return within, (f"{'within' if within else 'outside'} tolerance: largest difference {gaps[worst]:.3g} at epoch "
                    f"{worst} {'<=' if within else '>'} {setup.tolerance:g} ({why})")


def _check_store(uri: str) -> None:
    """The store must exist: MLflow would quietly create an empty one at a mistyped path and then miss the run."""
    from raysweep.mlflow_runs import TrackingUnavailableError, check_reachable

    if uri.startswith(("http://", "https://")):
        try:
            check_reachable(uri)
        except TrackingUnavailableError as exc:
            raise ReproduceError(str(exc)) from None
        return
    path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else local_store_folder(uri)
    if path is not None and not path.exists():
        raise ReproduceError(f"the MLflow store {uri} must exist, but {path} does not; pass --tracking-uri")


def _load_data(split: dict[str, Any], *, data_dir: str | None) -> Any:
    from raysweep import data

    try:  # exactly as raysweep.run loads it for the sweep
        return data.load(split["dataset"], data_dir=data_dir, val_size=split["val_size"],
                         val_pick=split["val_pick"], seed=split["seed"], subset=split["subset"])
    except data.DataNotFoundError as exc:
        raise ReproduceError(str(exc)) from None
    except ValueError as exc:  # e.g. a recorded subset larger than the files found here
        raise ReproduceError(f"data: {exc}") from None


def reproduce(run_id: str, *, tracking_uri: str | None = None, data_dir: str | None = None) -> int:
    """Retrain the trial (or each seed) of `run_id`, print the comparison, return the exit code (0 or 1)."""
    import torch
    from mlflow.tracking import MlflowClient

    from raysweep.mlflow_runs import resolve_tracking_uri

    # 1. The record: the trial (or its seeds), its sweep run, the data split and where the trial ran.
    uri = resolve_tracking_uri(tracking_uri)
    _check_store(uri)
    client = MlflowClient(uri)
    sweep_run, records = find_records(client, run_id)
    split, notes = split_of(sweep_run)
    setup = setup_of(split)

    # 2. The data, as the sweep loaded it, checked against the record.
    dataset = _load_data(split, data_dir=data_dir)
    notes.append(check_data(sweep_run.data.params.get("data.sha256"), loaded_checksum(dataset)))
    torch.set_num_threads(setup.threads)

    # 3. Retrain each record and compare, epoch by epoch.
    print(f"sweep run {sweep_run.info.run_id} ({sweep_run.info.run_name}): " +
          ", ".join(f"{key}={value!r}" for key, value in split.items()))
    print(f"training on {setup.device} with {setup.threads} thread(s); the trial ran on {setup.recorded_device}")
    for note in notes:
        print(f"note: {note}")
    matched = 0
    for record in records:
        defaults = TrialConfig().to_dict()
        settings = {k: v for k, v in record.config.to_dict().items() if v != defaults[k] or k == "seed"}
        print(f"\nrun {record.run_id} ({record.label})")
        print("settings: " + ", ".join(f"{key}={value!r}" for key, value in settings.items()))
        reproduced = retrain(record.config, dataset, device=setup.device, epochs=max(record.history))
        print("\n".join(table(record.history, reproduced)))
        ok, line = verdict(record.history, reproduced, setup=setup)
        matched += ok
        print(f"verdict: {line}")
    if len(records) > 1:
        print(f"\n{matched} of {len(records)} seed runs reproduced")
    return MATCHED if matched == len(records) else MISMATCHED


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m raysweep.reproduce", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("run_id", help="an MLflow trial run (or a configuration run with seed runs, or a seed run)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's)")
    parser.add_argument("--data-dir", help="data root (default: $RAYSWEEP_DATA_DIR, else ~/.cache/raysweep/data)")
    args = parser.parse_args(argv)
    try:
        return reproduce(args.run_id, tracking_uri=args.tracking_uri, data_dir=args.data_dir)
    except (ReproduceError, RecordError) as exc:
        fail(str(exc))


if __name__ == "__main__":
    raise SystemExit(main())
