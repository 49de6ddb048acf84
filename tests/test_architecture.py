"""The three layers and the rule between them (README "Architecture").

- core/: pure arithmetic, standard library only, and no I/O module (no files, terminal or environment);
- io/: reads files; may import core, yaml and pydantic, never cli;
- cli/: Typer and rich; the only layer that may import them;
- trace/: the optional tracer (torch); imports core only.
And no import cycle among the package's modules.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import vramcalc

SRC = Path(vramcalc.__file__).parent
MODULES = sorted(p for p in SRC.rglob("*.py"))
IO_MODULES = {"os", "sys", "pathlib", "io", "subprocess", "shutil", "socket", "tempfile", "glob", "builtins"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module an import statement names (top level or inside a function), absolute."""
    out: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            # `from vramcalc.core import params` imports the submodule vramcalc.core.params
            for a in node.names:
                path = SRC.parent / f"{base}.{a.name}".replace(".", "/")
                if path.with_suffix(".py").exists() or (path / "__init__.py").exists():
                    out.add(f"{base}.{a.name}")
    return out


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "root"


def ids(paths: list[Path]) -> list[str]:
    return [module_name(p) for p in paths]


CORE = [p for p in MODULES if layer(module_name(p)) == "core"]


@pytest.mark.parametrize("path", CORE, ids=ids(CORE))
def test_core_imports_only_the_standard_library_and_core(path: Path) -> None:
    bad = {m for m in imports(path) if not m.startswith("vramcalc.core") and m != "vramcalc"
           and (m.split(".")[0] not in sys.stdlib_module_names or m.split(".")[0] in IO_MODULES)}
    assert not bad, f"{module_name(path)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", CORE, ids=ids(CORE))
def test_core_has_no_print(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") in ("print", "open")]
    assert not calls


@pytest.mark.parametrize("path", MODULES, ids=ids(MODULES))
def test_nothing_outside_cli_imports_cli_or_typer_or_rich(path: Path) -> None:
    if layer(module_name(path)) == "cli" or module_name(path) == "vramcalc.__main__":
        return
    bad = {m for m in imports(path) if m.startswith("vramcalc.cli") or m.split(".")[0] in ("typer", "rich", "click")}
    assert not bad, f"{module_name(path)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", MODULES, ids=ids(MODULES))
def test_yaml_and_pydantic_only_in_io(path: Path) -> None:
    if layer(module_name(path)) == "io":
        return
    bad = {m for m in imports(path) if m.split(".")[0] in ("yaml", "pydantic")}
    assert not bad, f"{module_name(path)} imports {sorted(bad)}"


def test_no_import_cycle() -> None:
    """Tarjan's strongly connected components over the package's own import graph: all of size 1."""
    graph = {module_name(p): {m for m in imports(p) if m in {module_name(q) for q in MODULES}} for p in MODULES}
    # a package imports its submodules' parent implicitly; an edge to one's own package is not a cycle
    for name, deps in graph.items():
        deps.discard(name)
        deps -= {n for n in deps if name.startswith(n + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_check_can_fail(tmp_path: Path) -> None:
    """The graph code finds a planted two-module cycle (so the test above can fail)."""
    a = tmp_path / "vramcalc" / "a.py"
    a.parent.mkdir()
    (a.parent / "__init__.py").write_text("")
    a.write_text("from vramcalc import b\n")
    (a.parent / "b.py").write_text("import vramcalc.a\n")
    assert "vramcalc.b" in imports_in(a, tmp_path) and "vramcalc.a" in imports_in(a.parent / "b.py", tmp_path)


def imports_in(path: Path, root: Path) -> set[str]:
    global SRC
    saved, SRC = SRC, root / "vramcalc"
    try:
        return imports(path)
    finally:
        SRC = saved
