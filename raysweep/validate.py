"""A sweep as the command line resolves it, before Ray starts: load the file, apply the options, --set and --smoke, then
validate the result once: every field, every domain, every corner of the space.

Each failure is a SweepError whose one line names the field and the rule, e.g.
"`num_samples` must be an integer >= 1, but got num_samples=0"; the command line prints it and exits 2.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import math
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raysweep.config import ConfigError, TrialConfig
from raysweep.data import DATASETS, VAL_PICKS
from raysweep.resources import check_gpu_request
from raysweep.sweep import (
    METRICS,
    SCHEDULERS,
    SEARCHERS,
    Choice,
    Sweep,
    SweepError,
    Uniform,
    choice,
    domain_text,
    is_finite_number,
    searched_names,
    trial_settings,
)


def resolve(path: str | Path, *, options: Mapping[str, Any] | None = None, assignments: Sequence[str] = (),
            smoke: bool = False) -> Sweep:
    """The sweep file with the command line applied, validated once.

    `options` are typed Sweep fields from their own flags (num_samples, max_epochs, seed; None: not given), applied
    before the --set `assignments`, then the smoke budget."""
    sweep = load(path)
    sweep = dataclasses.replace(sweep, **{k: v for k, v in (options or {}).items() if v is not None})
    sweep = override(sweep, assignments)
    if smoke:
        sweep = smoke_budget(sweep)
    validate(sweep)
    return sweep


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
    except Exception as exc:  # the file is user code: whatever it raises is a bad sweep file
        message = " ".join(str(exc).split())  # the contract is one line on stderr
        raise SweepError(f"sweep file {path}: {type(exc).__name__} while importing: {message}") from None
    sweep = getattr(module, "SWEEP", None)
    if sweep is None:
        raise SweepError(f"sweep file {path}: must define `SWEEP = Sweep(...)`, but defines no SWEEP")
    if not isinstance(sweep, Sweep):
        raise SweepError(f"sweep file {path}: `SWEEP` must be a raysweep.sweep.Sweep, but got {type(sweep).__name__}")
    return sweep


def override(sweep: Sweep, assignments: Sequence[str]) -> Sweep:
    """Apply --set KEY=VALUE: a Sweep field, `fixed.SETTING`, or `space.SETTING` (a list searches it; a scalar pins
    it, moving it to `fixed`). Values are Python literals; a bare word is a string."""
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key:
            raise SweepError(f"--set: must be KEY=VALUE, but got {assignment!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare word, e.g. --set searcher=random
        scope, _, setting = key.partition(".")
        if scope in ("fixed", "space") and setting:
            check_setting(f"--set {key}", setting)
            fixed, space = dict(sweep.fixed), dict(sweep.space)
            if scope == "space" and isinstance(value, list):
                space[setting] = choice(value)
                fixed.pop(setting, None)
            else:
                fixed[setting] = value
                space.pop(setting, None)
            sweep = dataclasses.replace(sweep, fixed=fixed, space=space)
        elif key in {f.name for f in dataclasses.fields(Sweep)} - {"fixed", "space"}:
            sweep = dataclasses.replace(sweep, **{key: value})
        else:
            fields = ", ".join(f.name for f in dataclasses.fields(Sweep) if f.name not in ("fixed", "space"))
            raise SweepError(f"--set: unknown key `{key}`; use a Sweep field ({fields}), fixed.X or space.X")
    return sweep


def smoke_budget(sweep: Sweep) -> Sweep:
    """--smoke: 2 trials, 1 epoch, 256 training examples: the whole path in seconds."""
    # A grid of explicit trials keeps its first two; a product grid is sampled at random instead.
    product_grid = sweep.searcher == "grid" and not sweep.trials
    return dataclasses.replace(
        sweep,
        searcher="random" if product_grid else sweep.searcher,
        trials=sweep.trials[:2],
        space={} if sweep.trials else sweep.space,
        num_samples=2 if not sweep.trials else 1,
        max_epochs=1,
        grace_period=1,
        max_concurrent=2,
        subset=min(sweep.subset or 256, 256),
        val_size=sweep.val_size if isinstance(sweep.val_size, float) else 500 if sweep.dataset != "digits" else None,
        points_to_evaluate=sweep.points_to_evaluate[:2],
    )


def _fail(field_name: str, rule: str, value: Any) -> SweepError:
    return SweepError(f"`{field_name}` must be {rule}, but got {field_name}={value!r}")


def check_setting(where: str, setting: str) -> None:
    valid = TrialConfig.__dataclass_fields__
    if not isinstance(setting, str) or setting.replace(".", "_") not in valid or setting in ("max_epochs", "seed"):
        raise SweepError(f"{where}: unknown trial setting `{setting}` (max_epochs and seed are Sweep fields)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(sweep: Sweep) -> None:
    """Check every field, every domain and every corner of the space, so bad input fails before Ray starts."""
    s = sweep
    checks = [
        ("name", isinstance(s.name, str) and s.name.replace("_", "").replace("-", "").isalnum(),
         "a non-empty name of letters, digits, - and _"),
        ("dataset", isinstance(s.dataset, str) and s.dataset in DATASETS, f"one of {sorted(DATASETS)}"),
        ("searcher", s.searcher in SEARCHERS, f"one of {list(SEARCHERS)}"),
        ("scheduler", s.scheduler in SCHEDULERS, f"one of {list(SCHEDULERS)}"),
        ("metric", isinstance(s.metric, str) and s.metric in METRICS, f"one of {sorted(METRICS)}"),
        ("mode", s.mode in ("min", "max"), "'min' or 'max'"),
        ("num_samples", _is_int(s.num_samples) and s.num_samples >= 1, "an integer >= 1"),
        ("max_epochs", _is_int(s.max_epochs) and s.max_epochs >= 1, "an integer >= 1"),
        ("grace_period", _is_int(s.grace_period) and _is_int(s.max_epochs) and 1 <= s.grace_period <= s.max_epochs,
         f"an integer in [1, max_epochs={s.max_epochs}]"),
        ("reduction_factor", _is_int(s.reduction_factor) and s.reduction_factor >= 2, "an integer >= 2"),
        ("max_concurrent", _is_int(s.max_concurrent) and s.max_concurrent >= 0, "an integer >= 0 (0: no limit)"),
        ("cpu", isinstance(s.cpu, int | float) and s.cpu > 0, "a number > 0"),
        ("seed", _is_int(s.seed), "an integer"),
        ("repeats", _is_int(s.repeats) and s.repeats >= 1, "an integer >= 1 (seeds per configuration)"),
        ("val_pick", s.val_pick in VAL_PICKS, f"one of {list(VAL_PICKS)}"),
        ("subset", s.subset is None or (_is_int(s.subset) and s.subset >= 1), "None or an integer >= 1"),
        ("val_size", s.val_size is None or (_is_int(s.val_size) and s.val_size >= 1)
         or (isinstance(s.val_size, float) and 0 < s.val_size < 1),
         "None, a count >= 1 or a fraction in (0, 1)"),
        ("fixed", isinstance(s.fixed, dict), "a dict of trial settings"),
        ("space", isinstance(s.space, dict), "a dict of trial settings to domains"),
        ("points_to_evaluate", isinstance(s.points_to_evaluate, list | tuple), "a list of flat configs"),
    ]
    for name, holds, rule in checks:
        if not holds:
            raise _fail(name, rule, getattr(s, name))
    check_gpu_request(s.gpu)
    if s.metric in METRICS and s.mode != METRICS[s.metric]:
        raise _fail("mode", f"'{METRICS[s.metric]}' for metric {s.metric!r}", s.mode)
    for key in s.fixed:
        check_setting("fixed", key)
    _try_config("fixed", trial_settings(s))
    _validate_space(s.space, base=trial_settings(s), where="space", searcher=s.searcher)
    if s.searcher == "grid" and s.points_to_evaluate:
        raise _fail("points_to_evaluate", "empty for grid search (the grid runs every combination)",
                    s.points_to_evaluate)
    for i, point in enumerate(s.points_to_evaluate):
        _validate_point(s, point, where=f"points_to_evaluate[{i}]")
    _validate_trials(s)


def _validate_trials(s: Sweep) -> None:
    if not isinstance(s.trials, list | tuple):
        raise _fail("trials", "a list of dicts of trial settings", s.trials)
    if s.trials and s.searcher != "grid":
        raise _fail("searcher", "'grid' when `trials` lists explicit trials", s.searcher)
    for i, trial in enumerate(s.trials):
        where = f"trials[{i}]"
        if not isinstance(trial, dict) or not trial:
            raise _fail(where, "a non-empty dict of trial settings", trial)
        for key in trial:
            check_setting(where, key)
            if key in s.fixed or key in searched_names(s):
                raise SweepError(f"`{where}.{key}`: a trial may only set what `fixed` and `space` leave free, "
                                 f"but `{key}` is also in {'fixed' if key in s.fixed else 'space'}")
        _try_config(where, {**trial_settings(s), **trial})


def _try_config(where: str, values: dict[str, Any]) -> None:
    try:
        TrialConfig.from_dict(values)
    except ConfigError as exc:
        raise SweepError(f"{where}: {exc}") from None


def _validate_space(space: dict[str, Any], *, base: dict[str, Any], where: str, searcher: str) -> None:
    for key, domain in space.items():
        name = f"{where}.{key}"
        check_setting(name, key)
        if key in base and key not in ("max_epochs", "seed"):  # at any depth: a fixed child would be overridden
            raise SweepError(f"`{name}`: a setting is either fixed or searched, but `{key}` is in both")
        if isinstance(domain, Uniform):
            if searcher == "grid":
                raise SweepError(f"`{name}` must be a choice([...]) for grid search, but got a continuous domain")
            if not (is_finite_number(domain.low) and is_finite_number(domain.high)):
                raise _fail(f"{name}.low/high", "finite numbers", (domain.low, domain.high))
            if not domain.low < domain.high:
                raise SweepError(f"`{name}`: `low < high` must hold, but got low={domain.low}, high={domain.high}")
            corners = (domain.low, domain.high)
            if domain.log and domain.low <= 0:
                raise SweepError(f"`{name}`: loguniform needs `low > 0`, but got low={domain.low}")
            if domain.q is not None and not (is_finite_number(domain.q) and domain.q > 0):
                raise _fail(f"{name}.q", "a number > 0", domain.q)
            if domain.q is not None and not all(math.isclose(b / domain.q, round(b / domain.q)) for b in corners):
                raise SweepError(f"`{name}`: low and high must be multiples of q (Ray Tune's rule), but got "
                                 f"low={domain.low}, high={domain.high}, q={domain.q}")
            if _whole_only(key) and not (domain.q is not None and float(domain.q).is_integer()):
                raise SweepError(f"`{name}` takes whole numbers, so it needs a whole q, e.g. quniform(16, 256, 16), "
                                 f"but got {domain_text(domain)}")
            for corner in corners:
                _try_config(name, {**base, key: corner})
        elif isinstance(domain, Choice):
            if len(domain.options) == 0:
                raise SweepError(f"`{name}`: a choice needs at least one option, but got a choice of nothing")
            for option, children in zip(domain.options, domain.children or [{}] * len(domain.options), strict=True):
                _try_config(name, {**base, key: option})
                if not isinstance(children, dict):
                    raise _fail(f"{name}[{option!r}]", "a dict of child settings", children)
                _validate_space(children, base={**base, key: option}, where=f"{name}[{option!r}]", searcher=searcher)
        else:
            raise SweepError(
                f"`{name}` must be a domain (uniform, loguniform, quniform, choice), but got {domain!r}; "
                f"put fixed values in `fixed`"
            )


def _whole_only(setting: str) -> bool:
    """Settings typed int (batch_size, patience, ...): a sampled 37.4 would fail in every trial."""
    kind = typing.get_type_hints(TrialConfig)[setting.replace(".", "_")]
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    return int in options and float not in options


def _validate_point(sweep: Sweep, point: Any, *, where: str) -> None:
    if not isinstance(point, dict):
        raise _fail(where, "a dict of settings", point)
    names = _point_names(sweep.space, point, where=where)
    unknown = set(point) - set(names)
    if unknown:
        raise SweepError(f"`{where}`: every key must be a searched setting under the options the point chose, "
                         f"but got {sorted(unknown)}")
    missing = [name for name in names if name not in point]
    if missing and sweep.searcher == "tpe":  # HyperOpt cannot fill a partial point in; random search samples the rest
        raise SweepError(f"`{where}`: TPE needs a value for every setting the point's options search, but got "
                         f"none for {missing}")
    _try_config(where, {**trial_settings(sweep), **point})


def _point_names(space: dict[str, Any], point: dict[str, Any], *, where: str) -> list[str]:
    """The settings a point can give: the space's keys and the children of the options it chose."""
    names = []
    for key, domain in space.items():
        names.append(key)
        if isinstance(domain, Choice) and key in point:
            if point[key] not in domain.options:
                raise _fail(f"{where}.{key}", f"one of the choice's options {list(domain.options)}", point[key])
            if domain.conditional:
                names += _point_names(domain.children[domain.options.index(point[key])], point, where=where)
    return names
