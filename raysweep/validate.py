"""Validation of a whole sweep before Ray starts: every field, every domain, every corner of the space.

Each failure is a SweepError whose one line names the field and the rule, e.g.
"`num_samples` must be an integer >= 1, but got num_samples=0"; the command line prints it and exits 2.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any

from raysweep.config import ConfigError, TrialConfig
from raysweep.data import DATASETS, VAL_PICKS
from raysweep.sweep import (
    METRICS,
    SCHEDULERS,
    SEARCHERS,
    Choice,
    Sweep,
    SweepError,
    Uniform,
    describe,
    is_finite_number,
    searched_names,
    trial_settings,
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
        ("gpu", isinstance(s.gpu, int | float) and s.gpu >= 0 and (s.gpu <= 1 or float(s.gpu).is_integer()),
         "a number >= 0: a fraction up to 1, or whole GPUs"),
        ("seed", _is_int(s.seed), "an integer"),
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
                                 f"but got {describe(domain)}")
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
