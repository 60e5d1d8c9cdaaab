"""Importing a sweep file: a plain Python module that defines `SWEEP = Sweep(...)`, loaded with importlib (never
exec'd into globals). Whatever the file gets wrong on import is a one-line SweepError; validate.resolve checks the
rest."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from raysweep.overrides import SWEEP_FIELDS
from raysweep.suggest import unknown
from raysweep.sweep import Sweep, SweepError


def load(path: str | Path) -> Sweep:
    """Import a sweep file with importlib and return its SWEEP, not yet validated (see `resolve`)."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file: `{path}` must be an existing .py file, but it does not exist")
    spec = importlib.util.spec_from_file_location(f"raysweep_sweeps.{path.stem}", path)
    if spec is None or spec.loader is None or path.suffix != ".py":
        raise SweepError(f"sweep file: `{path}` must be a Python file ending in .py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as `import` does: a dataclass in the file looks its module up there
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise SweepError(f"sweep file {path}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except TypeError as exc:
        if not str(exc).startswith("Sweep.__init__() got an unexpected keyword argument"):
            raise SweepError(f"sweep file {path}: TypeError while importing: {' '.join(str(exc).split())}") from None
        name = str(exc).rsplit(" ", 1)[-1].strip("'")  # a misspelt field, e.g. Sweep(epochs=3)
        raise SweepError(f"sweep file {path}: {unknown('Sweep field', name, SWEEP_FIELDS)}") from None
    except Exception as exc:  # the file is user code: whatever it raises is a bad sweep file
        message = " ".join(str(exc).split())  # the contract is one line on stderr
        raise SweepError(f"sweep file {path}: {type(exc).__name__} while importing: {message}") from None
    sweep = getattr(module, "SWEEP", None)
    if sweep is None:
        raise SweepError(f"sweep file {path}: must define `SWEEP = Sweep(...)`, but defines no SWEEP")
    if not isinstance(sweep, Sweep):
        raise SweepError(f"sweep file {path}: `SWEEP` must be a raysweep.sweep.Sweep, but got {type(sweep).__name__}")
    return sweep
