"""A sweep as the command line resolves it, before Ray starts: load the file, apply the options, --set and --smoke
(overrides.py), then validate the result once: every field, every domain, every corner of the space.

Every mistake found is one line of the SweepError raised, naming the field and the rule, e.g.
"`num_samples` must be an integer >= 1, but got num_samples=0"; the command line prints them all and exits 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from raysweep.config import ConfigError, TrialConfig
from raysweep.conflicts import searched_twice, unused_children
from raysweep.data import DATASETS, VAL_PICKS
from raysweep.models import ACTIVATIONS, INITS, MODELS
from raysweep.optim import OPTIMIZERS, SCHEDULES
from raysweep.overrides import check_setting, override, smoke_budget
from raysweep.regularize import PENALTY_LAYERS, REGULARIZERS
from raysweep.resources import check_gpu_request
from raysweep.suggest import did_you_mean
from raysweep.sweep import (
    METRICS,
    SCHEDULERS,
    SEARCHERS,
    Choice,
    Sweep,
    SweepError,
    Uniform,
    domain_text,
    is_finite_number,
    searched_names,
)
from raysweep.sweep_file import load


def resolve(path: str | Path, *, options: Mapping[str, Any] | None = None, assignments: Sequence[str] = (),
            smoke: bool = False) -> Sweep:
    """The sweep file with the command line applied, validated once.

    `options` are typed Sweep fields from their own flags (num_samples, max_epochs, seed; None: not given), applied
    before the --set `assignments`, then the smoke budget."""
    sweep = load(path)
    sweep = dataclasses.replace(sweep, **{k: v for k, v in (options or {}).items() if v is not None})
    problems: list[str] = []  # bad --set assignments, reported with the sweep's own mistakes
    sweep = override(sweep, assignments, problems=problems)
    sweep = smoke_budget(sweep) if smoke else sweep
    validate(sweep, earlier=problems)
    return sweep


# Trial settings whose value names one entry of a registry: a misspelt name gets the closest valid one.
NAMED_SETTINGS = {"model": MODELS, "activation": ACTIVATIONS, "init": INITS, "optimizer": OPTIMIZERS,
                  "schedule": SCHEDULES, "regularizer": REGULARIZERS, "regularizer.layers": PENALTY_LAYERS}


def _fail(field_name: str, rule: str, value: Any, *, options: Any = None) -> SweepError:
    hint = did_you_mean(value, options) if options is not None and isinstance(value, str) else ""
    return SweepError(f"`{field_name}` must be {rule}, but got {field_name}={value!r}{hint}")


class _Problems:
    """Every mistake found in a sweep, one line each, so that one run shows the user all there is to fix."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    @contextlib.contextmanager
    def check(self) -> Iterator[None]:
        """Record the SweepError the block raises, and go on with the next check."""
        try:
            yield
        except SweepError as exc:
            self.lines += str(exc).splitlines()

    def raise_any(self) -> None:
        if self.lines:
            raise SweepError("\n".join(dict.fromkeys(self.lines)))  # one line per mistake, each once


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(sweep: Sweep, *, earlier: Sequence[str] = ()) -> None:
    """Check every field, domain and corner of the space before Ray starts: one SweepError, a line per mistake."""
    s, problems = sweep, _Problems(list(earlier))  # `earlier`: mistakes found before, e.g. in --set
    checks = [
        ("name", isinstance(s.name, str) and s.name.replace("_", "").replace("-", "").isalnum(),
         "a non-empty name of letters, digits, - and _"),
        ("dataset", isinstance(s.dataset, str) and s.dataset in DATASETS, f"one of {sorted(DATASETS)}", DATASETS),
        ("searcher", s.searcher in SEARCHERS, f"one of {list(SEARCHERS)}", SEARCHERS),
        ("scheduler", s.scheduler in SCHEDULERS, f"one of {list(SCHEDULERS)}", SCHEDULERS),
        ("metric", isinstance(s.metric, str) and s.metric in METRICS, f"one of {sorted(METRICS)}", METRICS),
        ("mode", s.mode in ("min", "max"), "'min' or 'max'"),
        ("num_samples", _is_int(s.num_samples) and s.num_samples >= 1, "an integer >= 1"),
        ("max_epochs", _is_int(s.max_epochs) and s.max_epochs >= 1, "an integer >= 1"),
        ("grace_period", not (_is_int(s.max_epochs) and s.max_epochs >= 1)  # else max_epochs' own line says it
         or (_is_int(s.grace_period) and 1 <= s.grace_period <= s.max_epochs),
         f"an integer in [1, max_epochs={s.max_epochs}]"),
        ("reduction_factor", _is_int(s.reduction_factor) and s.reduction_factor >= 2, "an integer >= 2"),
        ("max_concurrent", _is_int(s.max_concurrent) and s.max_concurrent >= 0, "an integer >= 0 (0: no limit)"),
        ("cpu", isinstance(s.cpu, int | float) and s.cpu > 0, "a number > 0"),
        ("seed", _is_int(s.seed), "an integer"),
        ("repeats", _is_int(s.repeats) and s.repeats >= 1, "an integer >= 1 (seeds per configuration)"),
        ("val_pick", s.val_pick in VAL_PICKS, f"one of {list(VAL_PICKS)}", VAL_PICKS),
        ("subset", s.subset is None or (_is_int(s.subset) and s.subset >= 1), "None or an integer >= 1"),
        ("val_size", s.val_size is None or (_is_int(s.val_size) and s.val_size >= 1)
         or (isinstance(s.val_size, float) and 0 < s.val_size < 1),
         "None, a count >= 1 or a fraction in (0, 1)"),
        ("fixed", isinstance(s.fixed, dict), "a dict of trial settings"),
        ("space", isinstance(s.space, dict), "a dict of trial settings to domains"),
        ("points_to_evaluate", isinstance(s.points_to_evaluate, list | tuple), "a list of flat configs"),
    ]
    for name, holds, rule, *options in checks:
        if not holds:
            problems.lines.append(str(_fail(name, rule, getattr(s, name), options=options[0] if options else None)))
    with problems.check():
        check_gpu_request(s.gpu)
    if isinstance(s.metric, str) and s.metric in METRICS and s.mode in ("min", "max") and s.mode != METRICS[s.metric]:
        problems.lines.append(str(_fail("mode", f"'{METRICS[s.metric]}' for metric {s.metric!r}", s.mode)))
    if not (isinstance(s.fixed, dict) and isinstance(s.space, dict) and isinstance(s.points_to_evaluate, list | tuple)):
        problems.raise_any()  # the checks below walk these
    # 1. The fixed settings; the checks after them start from a base without them when they are wrong, so that one
    # bad fixed value is reported once, not once per corner of the space.
    fixed_problems = len(problems.lines)
    budget = {"max_epochs": s.max_epochs if _is_int(s.max_epochs) and s.max_epochs >= 1 else 1,  # own lines above
              "seed": s.seed if _is_int(s.seed) else 0}
    for key in s.fixed:
        with problems.check():
            check_setting("fixed", key)
    if len(problems.lines) == fixed_problems:
        with problems.check():
            _try_config("fixed", {**s.fixed, **budget})
    base = {**(s.fixed if len(problems.lines) == fixed_problems else {}), **budget}
    # 2. The space: each domain, then settings that contradict each other.
    _validate_space(s.space, base=base, where="space", searcher=s.searcher, problems=problems)
    problems.lines += searched_twice(s.space) + unused_children(s)
    # 3. The points to evaluate first and the explicit trials.
    if s.searcher == "grid" and s.points_to_evaluate:
        problems.lines.append(str(_fail("points_to_evaluate", "empty for grid search (the grid runs every "
                                        "combination)", s.points_to_evaluate)))
    for i, point in enumerate(s.points_to_evaluate):
        with problems.check():
            _validate_point(s, point, where=f"points_to_evaluate[{i}]", base=base)
    _validate_trials(s, base=base, problems=problems)
    problems.raise_any()


def _validate_trials(s: Sweep, *, base: dict[str, Any], problems: _Problems) -> None:
    if not isinstance(s.trials, list | tuple):
        problems.lines.append(str(_fail("trials", "a list of dicts of trial settings", s.trials)))
        return
    if s.trials and s.searcher != "grid":
        problems.lines.append(str(_fail("searcher", "'grid' when `trials` lists explicit trials", s.searcher)))
    for i, trial in enumerate(s.trials):
        with problems.check():
            _validate_trial(s, trial, where=f"trials[{i}]", base=base)


def _validate_trial(s: Sweep, trial: Any, *, where: str, base: dict[str, Any]) -> None:
    if not isinstance(trial, dict) or not trial:
        raise _fail(where, "a non-empty dict of trial settings", trial)
    for key in trial:
        check_setting(where, key)
        if key in s.fixed or key in searched_names(s):
            raise SweepError(f"`{where}.{key}`: a trial may only set what `fixed` and `space` leave free, "
                             f"but `{key}` is also in {'fixed' if key in s.fixed else 'space'}")
    _try_config(where, {**base, **trial})


def _try_config(where: str, values: dict[str, Any]) -> None:
    for setting, names in NAMED_SETTINGS.items():
        value = values.get(setting)
        if isinstance(value, str) and value not in names:
            raise SweepError(f"{where}: {str(_fail(setting, f'one of {sorted(names)}', value, options=names))}")
    try:
        TrialConfig.from_dict(values)
    except ConfigError as exc:
        raise SweepError(f"{where}: {exc}") from None


def _validate_space(space: dict[str, Any], *, base: dict[str, Any], where: str, searcher: str,
                    problems: _Problems) -> None:
    for key, domain in space.items():
        with problems.check():
            _validate_domain(key, domain, base=base, where=where, searcher=searcher, problems=problems)


def _validate_domain(key: str, domain: Any, *, base: dict[str, Any], where: str, searcher: str,
                     problems: _Problems) -> None:
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
            _validate_space(children, base={**base, key: option}, where=f"{name}[{option!r}]", searcher=searcher,
                            problems=problems)
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


def _validate_point(sweep: Sweep, point: Any, *, where: str, base: dict[str, Any]) -> None:
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
    _try_config(where, {**base, **point})


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
