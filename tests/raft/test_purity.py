"""The Raft core is pure (architecture rule 1): no Twisted, gRPC, LMDB,
Klein, treq or protobuf, nothing of dkv outside dkv.raft, no clock, no
global random state. Checked twice: statically
(every import and every use of the ``random`` module in dkv/raft/*.py) and
dynamically (importing dkv.raft in a fresh interpreter loads none of them)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import dkv.raft

RAFT_DIR = Path(dkv.raft.__file__).parent
MODULES = sorted(RAFT_DIR.glob("*.py"))
FORBIDDEN = ("twisted", "grpc", "lmdb", "klein", "treq", "google", "time")
#: The one thing the core may take from ``random``: the type of the injected rng.
RANDOM_ALLOWED = {"Random"}


def _imports(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """(module, names) for every import statement, relative ones resolved
    only far enough to know they stay inside dkv."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "dkv." + (node.module or "") if node.level else (node.module or "")
            found.append((module, [alias.name for alias in node.names]))
    return found


def test_the_core_has_modules() -> None:
    assert {p.name for p in MODULES} >= {"core.py", "log.py", "messages.py", "progress.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_forbidden_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for module, _names in _imports(tree):
        top = module.split(".")[0]
        assert top not in FORBIDDEN, f"{path.name} imports {module}"
        assert module not in ("datetime", "asyncio", "threading", "socket"), (
            f"{path.name} imports {module}: the core has no clock, threads or I/O"
        )
        if top == "dkv":
            assert module == "dkv.raft" or module.startswith("dkv.raft."), (
                f"{path.name} imports {module}: the core depends on nothing of dkv outside dkv.raft"
            )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_global_random_functions(path: Path) -> None:
    """``random.random()``, ``random.choice()``... share hidden global state,
    so a schedule could not be replayed from its seed. Only ``random.Random``
    (the type of the injected generator) may be named."""
    tree = ast.parse(path.read_text(), filename=str(path))
    random_aliases = set()
    for module, names in _imports(tree):
        if module == "random" and not names:
            random_aliases.add("random")
        if module == "random" and names:
            assert set(names) <= RANDOM_ALLOWED, f"{path.name}: from random import {names}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "random" and alias.asname:
                    random_aliases.add(alias.asname)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in random_aliases
        ):
            assert node.attr in RANDOM_ALLOWED, (
                f"{path.name}:{node.lineno} uses the global random.{node.attr}"
            )


def test_importing_the_core_loads_no_io_library() -> None:
    """In a fresh interpreter, ``import dkv.raft`` loads none of the I/O
    libraries. (``time`` cannot be checked this way: the interpreter itself
    loads it at start-up; the static test above covers it.)"""
    code = "import json, sys; import dkv.raft; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=RAFT_DIR.parent.parent,
    ).stdout
    loaded = json.loads(out)
    offending = [
        m
        for m in loaded
        if m.split(".")[0] in FORBIDDEN[:-1] or (m.startswith("dkv.") and not m.startswith("dkv.raft"))
    ]
    assert offending == [], f"importing dkv.raft loaded {offending}"
