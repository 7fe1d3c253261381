"""The layering of ``dkv/``: no import cycles (imports inside functions count,
``if TYPE_CHECKING:`` blocks do not: they never run), and the leaves stay
leaves. Checked statically over the source, so a cycle that happens to work
at import time today is still caught."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import dkv

ROOT = Path(dkv.__file__).resolve().parent
#: Modules that may import nothing of dkv but these prefixes.
LEAVES = {
    "dkv.config": ("dkv.raft",),
    "dkv.errors": (),
    "dkv.logs": (),
    "dkv.aio": (),
    "dkv.storage.tables": (),
    "dkv.asyncio_reactor": (),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _exists(name: str) -> bool:
    base = ROOT.parent / Path(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every dkv module this module imports, wherever the import statement is."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "dkv":
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "dkv":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if _exists(sub) else base
        stack.extend(ast.iter_child_nodes(node))


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        if "pb" in path.relative_to(ROOT).parts[:1]:
            continue  # generated protobuf modules
        name = _module_name(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = {
            m for m in _imports(tree, name, path.name == "__init__.py") if m != name and not m.startswith("dkv.pb")
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_there_is_no_import_cycle_in_dkv() -> None:
    cycles = _cycles(_graph())
    assert cycles == [], f"import cycles inside dkv/: {cycles}"


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaves_import_only_what_they_may(leaf: str) -> None:
    allowed = LEAVES[leaf]
    imported = _graph()[leaf]
    wrong = sorted(m for m in imported if not any(m == a or m.startswith(a + ".") for a in allowed))
    assert wrong == [], f"{leaf} is a leaf but imports {wrong}"


def test_the_checker_sees_a_cycle_through_a_function() -> None:
    graph = {"dkv.a": {"dkv.b"}, "dkv.b": {"dkv.c"}, "dkv.c": {"dkv.a"}, "dkv.d": {"dkv.a"}}
    assert _cycles(graph) == [["dkv.a", "dkv.b", "dkv.c"]]
    tree = ast.parse("def f():\n    from dkv import node\n")
    assert list(_imports(tree, "dkv.x", False)) == ["dkv.node"]


def test_every_module_names_tests_that_exist() -> None:
    """A module's first line ``# test-case-name: tests.x,tests.y`` (Twisted's
    habit) names the tests that cover it; they must exist."""
    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "__init__.py" or "pb" in path.relative_to(ROOT).parts[:1]:
            continue
        first = path.read_text().split("\n", 1)[0]
        if not first.startswith("# test-case-name:"):
            missing.append(f"{_module_name(path)}: no test-case-name line")
            continue
        for name in first.split(":", 1)[1].split(","):
            target = ROOT.parent / Path(*name.strip().split(".")).with_suffix(".py")
            if not target.exists():
                missing.append(f"{_module_name(path)} names {name.strip()}, which does not exist")
    assert missing == []
