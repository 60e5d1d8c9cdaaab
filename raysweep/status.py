"""The rules for how a trial ended and what its best was, shared by trials.csv, the MLflow record and the console.

- `status_of`: one of STATUSES, from the trial's latest result.
- `stop_reason_of`: one of STOP_REASONS, why it stopped when it did.
- `best_of`: the best value of the sweep metric over the trial's epochs (mode-aware) and the epoch that reached it.
Both the driver's MLflow callback (while the sweep runs) and the table written after fit() call these on the same
results (raysweep.trial_log), so the records cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

STATUSES = ("completed", "early_stopped", "diverged", "failed", "interrupted")
STOP_REASONS = ("asha", "patience", "diverged", "max_epochs", "failed", "interrupted")


def epoch_of(result: dict[str, Any]) -> int:
    """The epoch a result reports (Tune's training_iteration when it has none: one report per epoch)."""
    return int(result.get("epoch", result.get("training_iteration", 0)))


def status_of(last: dict[str, Any], *, max_epochs: int, failed: bool, interrupted: bool = False) -> str:
    """completed / early_stopped (ours or ASHA's) / diverged / failed / interrupted (the sweep stopped first)."""
    reason = stop_reason_of(last, max_epochs=max_epochs, failed=failed, interrupted=interrupted)
    return {"asha": "early_stopped", "patience": "early_stopped", "max_epochs": "completed"}.get(reason, reason)


def stop_reason_of(last: dict[str, Any], *, max_epochs: int, failed: bool, interrupted: bool = False) -> str:
    """Why the trial stopped, from its latest result.

    The trainable's own results say `diverged` and `early_stopped` (patience on val_loss); a trial that stopped
    before max_epochs with neither was stopped by the scheduler (ASHA, the only one that stops trials early)."""
    if failed:
        return "failed"
    if interrupted:
        return "interrupted"
    if last.get("diverged"):
        return "diverged"
    if last.get("early_stopped"):
        return "patience"
    if epoch_of(last) < max_epochs:
        return "asha"
    return "max_epochs"


def best_of(results: Iterable[dict[str, Any]], *, metric: str, mode: str) -> tuple[float, int | None]:
    """(best value, its epoch) of `metric` over the results; the first epoch wins a tie; (nan, None) when no
    result has a finite value (a NaN loss is never the best)."""
    best, best_epoch = math.nan, None
    for result in results:
        value = result.get(metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            continue
        if best_epoch is None or (value > best if mode == "max" else value < best):
            best, best_epoch = float(value), epoch_of(result)
    return best, best_epoch
