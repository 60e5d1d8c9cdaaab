"""The Ray Tune trainable: one trial (or one configuration with its seeds) on the device Ray gave it, reporting
metrics and a checkpoint after every epoch; and the checkpoints read back safely.

With repeats = N, the trial trains N seeds in lockstep (raysweep.seeds): it reports the mean over the seeds of every
metric under the usual names (what the searcher and ASHA see), `<metric>_std`, and each seed's own metrics under
SEED_METRICS for the MLflow callback; one checkpoint holds every seed's state.
"""

from __future__ import annotations

import logging
import math
import pickle
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from raysweep.config import TrialConfig
from raysweep.models import build_model
from raysweep.seeds import run_seeds
from raysweep.train import run_trial

if TYPE_CHECKING:
    from raysweep.data import Dataset

log = logging.getLogger(__name__)

# Result key (repeats > 1): each seed's metrics of the epoch as {"<seed>": metrics}; Tune's tables flatten it to
# columns seed_metrics/<seed>/<metric>.
SEED_METRICS = "seed_metrics"


def pick_device(*, gpus_assigned: int) -> torch.device:
    """CUDA when Ray gave the trial a GPU and one is visible; otherwise the CPU, saying why if a GPU was expected."""
    if gpus_assigned and torch.cuda.is_available():
        return torch.device("cuda")
    if gpus_assigned:
        log.warning("Ray assigned a GPU to this trial but torch sees no CUDA device; training on the CPU")
    return torch.device("cpu")


CHECKPOINT_FILE = "state.pt"


def load_state(folder: str | Path, *, device: torch.device | str) -> dict[str, Any]:
    """A checkpoint's state as run_trial saves it: tensors, numbers, strings and containers, nothing else.

    Unpickling can run any code the file names, and checkpoints come back from shared storage (NFS, S3), so they are
    read with weights_only=True: a file that needs more is refused, and whatever it carries never runs.
    """
    path = Path(folder) / CHECKPOINT_FILE
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is a page of advice; its one line of substance names what the file asked for.
        lines = [line.split("error: ", 1)[-1] for line in str(exc).splitlines() if "WeightsUnpickler error" in line]
        reason = lines[0].split(". ")[0] if lines else str(exc).splitlines()[0]
        raise pickle.UnpicklingError(
            f"{path} is not a plain tensor checkpoint ({reason}); refusing to load it, since that could run code"
        ) from exc


def device_report(device: torch.device) -> dict[str, Any]:
    """Where the trial trains, and on CUDA its peak allocated memory so far (MiB): what the GPU check reads."""
    if device.type != "cuda":
        return {"device": "cpu"}
    return {"device": "cuda", "gpu_mem_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20}


def quiet_exit_in_callbacks() -> None:
    """In this (worker) process, say nothing when a SystemExit is raised where Python can only ignore it.

    Ray stops a worker whose trials are over with SIGTERM, and its handler raises SystemExit wherever the worker is.
    Inside a weakref or finalizer callback Python ignores that exception but prints "Exception ignored in ...",
    a traceback that Ray forwards to the driver's console beside the summary: noise from a worker that exited
    normally. Every other unraisable exception is printed as before."""
    if getattr(sys.unraisablehook, "quiet_exit", False):
        return
    printed = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if unraisable.exc_type is None or not issubclass(unraisable.exc_type, SystemExit):
            printed(unraisable)

    hook.quiet_exit = True
    sys.unraisablehook = hook


def trainable(config: dict[str, Any], *, data: Dataset, repeats: int = 1) -> None:
    """The Ray Tune function trainable: one trial (with `repeats` seeds), reporting metrics and a checkpoint after
    every epoch."""
    import ray
    from ray import tune

    quiet_exit_in_callbacks()
    trial = TrialConfig.from_dict(config)
    resources = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    device = pick_device(gpus_assigned=math.ceil(resources.get("GPU", 0)))
    if device.type == "cuda":  # run.py reuses workers across trials: the peak reported must be this trial's
        torch.cuda.reset_peak_memory_stats(device)
    state = None
    if (checkpoint := tune.get_checkpoint()) is not None:
        with checkpoint.as_directory() as folder:
            state = load_state(folder, device=device)

    for metrics, epoch_state in epochs(trial, data, repeats=repeats, device=device, state=state):
        with tempfile.TemporaryDirectory() as folder:
            torch.save(epoch_state, Path(folder) / CHECKPOINT_FILE)
            tune.report(metrics | device_report(device), checkpoint=tune.Checkpoint.from_directory(folder))


def load_model(checkpoint_dir: str | Path, config: TrialConfig, *, input_shape: tuple, num_classes: int,
               seed_index: int = 0) -> nn.Module:
    """Rebuild a trial's model from one of its checkpoints (on the CPU); with repeats, that of seed number
    `seed_index` (0: the configuration's own seed)."""
    state = load_state(checkpoint_dir, device="cpu")
    model = build_model(config, input_shape=input_shape, num_classes=num_classes)
    model.load_state_dict(state["seeds"][seed_index]["model"] if "seeds" in state else state["model"])
    return model.eval()


def epochs(config: TrialConfig, data: Dataset, *, repeats: int, device: torch.device,
           state: dict | None) -> Iterator[tuple[dict[str, Any], dict]]:
    """(metrics, state) per epoch: of the one trial, or of its seeds (mean metrics, every seed's state)."""
    if repeats == 1:
        yield from run_trial(config, data, device=device, state=state)
        return
    seeds = None if state is None else state["seeds"]
    numbers = [config.seed + i for i in range(repeats)]
    for mean, per_seed, states in run_seeds(config, data, repeats=repeats, device=device, states=seeds):
        by_seed = {str(seed): metrics for seed, metrics in zip(numbers, per_seed, strict=True)}
        yield mean | {SEED_METRICS: by_seed}, {"seeds": states, "epoch": mean["epoch"]}
