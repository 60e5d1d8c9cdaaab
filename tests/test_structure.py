"""The package's shape: imports go one way, files stay small, every module has its test file, and nothing private
crosses a module boundary. Read from the source with ast: nothing is imported or run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "raysweep"
TESTS = Path(__file__).resolve().parent
MAX_LINES = 300  # STYLE.md: one concern per file, about 300 lines at most
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(module: str) -> list[tuple[str, list[str]]]:
    """(raysweep module imported, names imported from it) for every import that runs, at any depth of the file;
    imports under `if TYPE_CHECKING:` never run and do not count."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "raysweep":
                found.extend((alias.name, []) for alias in node.names)
            elif node.module.startswith("raysweep."):
                found.append((node.module.split(".")[1], [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name.split(".")[1], []) for a in node.names if a.name.startswith("raysweep."))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse((PACKAGE / f"{module}.py").read_text()))
    return [(target, names) for target, names in found if target in MODULES and target != module]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each as the path that closes it (a depth-first search with an explicit path)."""
    found, done = [], set()

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            found.append(path[path.index(node):] + [node])
            return
        if node in done:
            return
        for target in sorted(graph[node]):
            walk(target, path + [node])
        done.add(node)

    for module in sorted(graph):
        walk(module, [])
    return found


def test_the_cycle_finder_finds_a_cycle_it_is_given():  # the check below must be able to fail
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_runtime_import_cycle_inside_the_package():
    graph = {module: {target for target, _ in runtime_imports(module)} for module in MODULES}
    assert cycles(graph) == []


@pytest.mark.parametrize("module", MODULES)
def test_a_module_stays_under_the_line_budget(module):
    lines = len((PACKAGE / f"{module}.py").read_text().splitlines())
    assert lines <= MAX_LINES, f"raysweep/{module}.py has {lines} lines"


@pytest.mark.parametrize("module", MODULES)
def test_every_module_has_its_own_test_file(module):
    assert (TESTS / f"test_{module}.py").is_file()


@pytest.mark.parametrize("module", MODULES)
def test_no_private_name_is_imported_from_another_module(module):
    private = [(target, name) for target, names in runtime_imports(module) for name in names if name.startswith("_")]
    assert private == []
