"""Settings of a search space that contradict each other, found before Ray starts: a searched child that its parent's
possible values never use (adam has no momentum), and the same setting searched in two places at once."""

from __future__ import annotations

from typing import Any

from raysweep.config import TrialConfig
from raysweep.sweep import Choice, Sweep

# Which values of its parent use each child setting, as optim.py and regularize.py build them; a child searched
# where its parent can only be something else changes nothing in any trial, so the search would be wasted.
USED_BY: dict[str, tuple[str, ...]] = {
    "optimizer.momentum": ("sgd", "momentum", "nesterov", "rmsprop"),
    "optimizer.nesterov": ("sgd", "momentum"),
    "optimizer.beta1": ("adam", "adamw"),
    "optimizer.beta2": ("adam", "adamw"),
    "optimizer.eps": ("adam", "adamw", "rmsprop", "adagrad"),
    "optimizer.rho": ("rmsprop",),
    "schedule.decay": ("inverse_time",),
    "schedule.gamma": ("exponential", "step"),
    "schedule.step_size": ("step",),
    "regularizer.alpha": ("l1", "l2", "elastic_net"),
    "regularizer.l1_ratio": ("elastic_net",),
    "regularizer.layers": ("l1", "l2", "elastic_net"),
}
PARENTS = sorted({child.split(".")[0] for child in USED_BY})


def unused_children(sweep: Sweep) -> list[str]:
    """One line per searched child whose parent, where it is searched, can only take values that ignore it."""
    possible = {}
    for parent in PARENTS:
        domain = sweep.space.get(parent)
        if isinstance(domain, Choice):
            possible[parent] = domain.options
        else:
            possible[parent] = (sweep.fixed.get(parent, getattr(TrialConfig, parent)),)
    return _unused(sweep.space, possible=possible, where="space")


def _unused(space: dict[str, Any], *, possible: dict[str, tuple], where: str) -> list[str]:
    lines = []
    for key, domain in space.items():
        if key in USED_BY:
            parent = key.split(".")[0]
            values = possible[parent]
            if not any(value in USED_BY[key] for value in values):
                can = " or ".join(repr(v) for v in values)
                lines.append(f"`{where}.{key}` is searched, but `{parent}` can only be {can} there, which never uses "
                             f"it (used by {', '.join(USED_BY[key])}); search it under one of those options")
        if isinstance(domain, Choice) and domain.conditional:
            for option, children in zip(domain.options, domain.children, strict=True):
                if isinstance(children, dict):
                    chosen = {**possible, key: (option,)} if key in PARENTS else possible
                    lines += _unused(children, possible=chosen, where=f"{where}.{key}[{option!r}]")
    return lines


def searched_twice(space: dict[str, Any], *, where: str = "space") -> list[str]:
    """One line per setting that two keys of the same space search at once (a child of one option of a choice and a
    child of another option are never searched at once: that is allowed)."""
    lines, first = [], {}  # setting -> the key of `space` that first searches it
    for key, domain in space.items():
        for name in [key, *sorted(_reachable(domain))]:
            if name in first and first[name] != key:
                lines.append(f"`{name}` is searched in two places at once, `{where}.{first[name]}` and "
                             f"`{where}.{key}`; search it in one place")
            first.setdefault(name, key)
        if isinstance(domain, Choice) and domain.conditional:
            for option, children in zip(domain.options, domain.children, strict=True):
                if isinstance(children, dict):
                    lines += searched_twice(children, where=f"{where}.{key}[{option!r}]")
    return lines


def _reachable(domain: Any) -> set[str]:
    """Every setting a domain's options can bring in, at any depth."""
    names: set[str] = set()
    if isinstance(domain, Choice):
        for children in domain.children:
            if isinstance(children, dict):
                for key, child in children.items():
                    names |= {key} | _reachable(child)
    return names
