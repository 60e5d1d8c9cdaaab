"""The one rule for how a trial ended, shared by trials.csv, the MLflow status tag and the console.

A trial's status is one of STATUSES. Both the driver's MLflow callback (while the sweep runs) and the table written
after fit() derive it from the trial's latest result with `status_of`, so the two records cannot disagree.
"""

from __future__ import annotations

from typing import Any

STATUSES = ("completed", "early_stopped", "diverged", "failed", "interrupted")


def epoch_of(result: dict[str, Any]) -> int:
    """The epoch a result reports (Tune's training_iteration when it has none: one report per epoch)."""
    return int(result.get("epoch", result.get("training_iteration", 0)))


def status_of(last: dict[str, Any], *, max_epochs: int, failed: bool, interrupted: bool = False) -> str:
    """completed / early_stopped (ours or ASHA's) / diverged / failed / interrupted (the sweep stopped first)."""
    if failed:
        return "failed"
    if interrupted:
        return "interrupted"
    if last.get("diverged"):
        return "diverged"
    if last.get("early_stopped") or epoch_of(last) < max_epochs:
        return "early_stopped"
    return "completed"
