"""The arithmetic core performs no I/O: its modules import nothing that touches files or the terminal."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vramcalc

SRC = Path(vramcalc.__file__).parent
FORBIDDEN_IN_CORE = {"os", "sys", "pathlib", "io", "subprocess", "yaml", "rich", "typer", "click", "shutil"}
CORE = ["units.py", "params.py", "fit.py", "errors.py", "specs.py", *[f"memory/{p.name}" for p in
                                                                       sorted((SRC / "memory").glob("*.py"))]]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", CORE, ids=CORE)
def test_core_does_no_io(module: str) -> None:
    assert not imported_modules(SRC / module) & FORBIDDEN_IN_CORE


@pytest.mark.parametrize("module", CORE, ids=CORE)
def test_core_has_no_print(module: str) -> None:
    tree = ast.parse((SRC / module).read_text(encoding="utf-8"))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"]
    assert not calls
