"""How the report and the study notebooks name trials: short unique labels from the parameters that vary, and the
leaders of a column with their ties."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from raysweep.charts import format_value, normalized

# Categorical choices that name a trial by themselves, so their value leads its label without a key.
LEAD_PARAMS = ("optimizer", "regularizer")


def label_trials(params: pd.DataFrame) -> list[str]:
    """One short, unique label per row, built from the parameters that vary across rows."""
    varying = [c for c in params.columns if len({normalized(v) for v in params[c]}) > 1]
    # With nothing varying (a single trial), the optimizer and regularizer still say what it was.
    leads = [c for c in LEAD_PARAMS if c in (varying or params.columns)]
    keyed = [c for c in varying if c not in leads]
    short = [c.rsplit(".", 1)[-1] for c in keyed]
    # "optimizer.momentum" reads as "momentum" unless two varying params would then share a key.
    keys = [s if short.count(s) == 1 and s not in LEAD_PARAMS else c for s, c in zip(short, keyed, strict=True)]
    labels = []
    for _, row in params.iterrows():
        parts = [format_value(row[c]) for c in leads if normalized(row[c]) is not None]
        parts += [f"{k}={format_value(row[c])}" for k, c in zip(keys, keyed, strict=True)
                  if normalized(row[c]) is not None]
        labels.append(" ".join(parts) or "trial")
    return numbered(labels)


def numbered(labels: Sequence[str]) -> list[str]:
    """Labels made unique in order: a repeat (a repeated grid point) gets a number, "adam", "adam #2", "adam #3"."""
    unique: list[str] = []
    for base in labels:
        label, repeat = base, 1
        while label in unique:
            repeat += 1
            label = f"{base} #{repeat}"
        unique.append(label)
    return unique


def leaders(values: pd.Series, *, highest: bool = True, fmt: str = "{:.4f}") -> str:
    """The trial(s) with the highest (or lowest) value, ties listed together: "adam, rmsprop (0.9812)"."""
    values = values.dropna()
    if values.empty:
        return "no trial (no values)"
    extreme = values.max() if highest else values.min()
    return f"{', '.join(map(str, values.index[values == extreme]))} ({fmt.format(extreme)})"
