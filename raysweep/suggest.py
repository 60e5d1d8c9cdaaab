"""Messages for a name that names nothing: the closest valid name ("did you mean ...?") and the list of valid ones."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: object, valid: Iterable[object]) -> str | None:
    """The valid name most like `name` (difflib's ratio >= 0.6), or None when none is close."""
    names = [str(v) for v in valid]
    found = difflib.get_close_matches(str(name), names, n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(name: object, valid: Iterable[object]) -> str:
    """"; did you mean `optimizer`?" when a valid name is close to `name`, else ""."""
    match = closest(name, valid)
    return f"; did you mean `{match}`?" if match is not None else ""


def unknown(kind: str, name: object, valid: Iterable[object]) -> str:
    """E.g. "unknown trial setting `optimiser`; did you mean `optimizer`? Valid: model, hidden, ..."."""
    valid = list(valid)
    hint = did_you_mean(name, valid) or ";"
    return f"unknown {kind} `{name}`{hint} valid: {', '.join(map(str, valid))}"
