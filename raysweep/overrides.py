"""What the command line changes in a sweep: --set KEY=VALUE (what it may name, how its value is read, the
points_to_evaluate it moves) and the --smoke budget.

A value is a Python literal (`--set fixed.hidden=[300,100]`), a bare word (`--set searcher=random`) or, for a searched
setting, one of the sweep file's domain helpers (`--set 'space.lr=loguniform(1e-4,1e-1)'`). Helpers are read with ast:
only calls to choice / uniform / loguniform / quniform with literal arguments; nothing is evaluated.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

from raysweep.config import TrialConfig, field_key
from raysweep.suggest import unknown
from raysweep.sweep import Choice, Sweep, SweepError, Uniform, choice, is_finite_number, loguniform, quniform, uniform

DOMAIN_HELPERS: dict[str, Callable[..., Any]] = {
    "choice": choice, "uniform": uniform, "loguniform": loguniform, "quniform": quniform}
SETTINGS = [field_key(f.name) for f in dataclasses.fields(TrialConfig) if f.name not in ("max_epochs", "seed")]
SWEEP_FIELDS = [f.name for f in dataclasses.fields(Sweep)]


def check_setting(where: str, setting: Any) -> None:
    """`setting` must name a trial setting (max_epochs and seed are Sweep fields, set for every trial)."""
    if setting in SETTINGS:
        return
    if setting in ("max_epochs", "seed"):
        raise SweepError(f"{where}: `{setting}` is a Sweep field, not a trial setting: set it with "
                         f"--set {setting}=N or Sweep({setting}=...)")
    raise SweepError(f"{where}: {unknown('trial setting', setting, SETTINGS)}")


def override(sweep: Sweep, assignments: Sequence[str], *, warn: Callable[[str], None] | None = None,
             problems: list[str] | None = None) -> Sweep:
    """Apply --set KEY=VALUE: a Sweep field, `fixed.SETTING`, or `space.SETTING` (a list or a domain searches it; a
    scalar pins it, moving it to `fixed`). When the space changes, points_to_evaluate follow it (see `fit_points`).

    A bad assignment raises SweepError, or, given a `problems` list, is added to it while the others still apply."""
    space_changed, found = False, []
    for assignment in assignments:
        try:
            sweep, changed = _assign(sweep, assignment)
            space_changed |= changed
        except SweepError as exc:
            found.append(str(exc))
    if space_changed:
        sweep, notes = fit_points(sweep)
        for note in notes:
            (warn or _warn)(note)
    if found and problems is None:
        raise SweepError("\n".join(found))
    (problems if problems is not None else []).extend(found)
    return sweep


def _assign(sweep: Sweep, assignment: str) -> tuple[Sweep, bool]:
    """The sweep with one KEY=VALUE applied, and whether it changed the fixed or searched settings."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise SweepError(f"--set: must be KEY=VALUE, but got {assignment!r}")
    scope, _, setting = key.partition(".")
    if scope in ("fixed", "space") and setting:
        check_setting(f"--set {key}", setting)
        value = parse_value(text, where=f"--set {key}", domains=scope == "space")
        fixed, space = dict(sweep.fixed), dict(sweep.space)
        if scope == "space" and isinstance(value, list | Choice | Uniform):
            space[setting] = choice(value) if isinstance(value, list) else value
            fixed.pop(setting, None)
        else:
            fixed[setting] = value
            space.pop(setting, None)
        return dataclasses.replace(sweep, fixed=fixed, space=space), True
    if key in SWEEP_FIELDS and key not in ("fixed", "space"):
        return dataclasses.replace(sweep, **{key: parse_value(text, where=f"--set {key}", domains=False)}), False
    fields = [name for name in SWEEP_FIELDS if name not in ("fixed", "space")]
    raise SweepError(f"--set: {unknown('key', key, fields)}; or fixed.SETTING, space.SETTING")


def _warn(message: str) -> None:
    print(f"raysweep.run: warning: {message}", file=sys.stderr)


def parse_value(text: str, *, where: str, domains: bool) -> Any:
    """A Python literal; a domain helper call when `domains`; otherwise the text itself (a bare word)."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return text
    if not _has_call(tree):
        try:
            return ast.literal_eval(tree)
        except ValueError:
            return text  # e.g. a bare word such as random, which parses as a name
    if not domains:
        raise SweepError(f"{where}: a domain such as loguniform(...) searches a setting: use space.SETTING, "
                         f"but got {text!r}")
    return _build(tree, where=where, text=text)


def _has_call(node: ast.AST) -> bool:
    return any(isinstance(child, ast.Call) for child in ast.walk(node))


def _build(node: ast.AST, *, where: str, text: str) -> Any:
    """A domain from its syntax tree: helper calls whose arguments are literals, lists, or dicts of domains."""
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in DOMAIN_HELPERS:
            raise SweepError(f"{where}: only calls to {', '.join(DOMAIN_HELPERS)} with literal arguments are "
                             f"allowed, but got {text!r}")
        args = [_build(arg, where=where, text=text) for arg in node.args]
        kwargs = {kw.arg: _build(kw.value, where=where, text=text) for kw in node.keywords}
        try:
            return DOMAIN_HELPERS[name](*args, **kwargs)
        except TypeError as exc:
            raise SweepError(f"{where}: {exc} in {text!r}") from None
    if isinstance(node, ast.Dict):
        return {_build(k, where=where, text=text): _build(v, where=where, text=text)
                for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.List | ast.Tuple):
        return [_build(item, where=where, text=text) for item in node.elts]
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise SweepError(f"{where}: arguments must be literals (numbers, strings, lists), but got {text!r}") from None


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


def fit_points(sweep: Sweep) -> tuple[Sweep, list[str]]:
    """points_to_evaluate made to fit a space that --set changed: a setting no longer searched leaves the point; a
    point whose value falls outside its new domain, or that lacks a value TPE needs, is dropped. One note for each."""
    kept, notes = [], []
    for i, point in enumerate(sweep.points_to_evaluate):
        if not isinstance(point, dict):
            kept.append(point)  # validate() reports it
            continue
        where = f"points_to_evaluate[{i}]"
        searched = _names(sweep.space)
        gone = [key for key in point if key not in searched]
        point = {key: value for key, value in point.items() if key in searched}
        problem = _misfit(sweep.space, point, need_all=sweep.searcher == "tpe")
        if problem:
            notes.append(f"{where} dropped: {problem} after --set")
        elif gone:
            notes.append(f"{where}: {', '.join(f'`{k}`' for k in gone)} no longer searched after --set; "
                         f"the point keeps the rest")
        if not problem:
            kept.append(point)
    return dataclasses.replace(sweep, points_to_evaluate=type(sweep.points_to_evaluate)(kept)), notes


def _names(space: dict[str, Any]) -> set[str]:
    names = set(space)
    for domain in space.values():
        if isinstance(domain, Choice):
            for children in domain.children:
                names |= _names(children) if isinstance(children, dict) else set()
    return names


def _misfit(space: dict[str, Any], point: dict[str, Any], *, need_all: bool) -> str | None:
    """Why `point` cannot be a trial of `space` (under the options it chose), or None when it fits."""
    for key, domain in space.items():
        if key not in point:
            if need_all:  # HyperOpt cannot fill a partial point in; random search samples the rest
                return f"it has no value for `{key}`, which is now searched"
            continue
        value = point[key]
        if isinstance(domain, Choice):
            if value not in domain.options:
                return f"`{key}`={value!r} is not one of {list(domain.options)}"
            children = domain.children[domain.options.index(value)] if domain.conditional else {}
            problem = _misfit(children, point, need_all=need_all) if isinstance(children, dict) else None
            if problem:
                return problem
        elif isinstance(domain, Uniform) and not (is_finite_number(value) and domain.low <= value <= domain.high):
            return f"`{key}`={value!r} is outside [{domain.low:g}, {domain.high:g}]"
    return None
