"""A benchmarks/ script loaded as a module by the tests (benchmarks/ is not a package; not a test module)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(stem: str, module_name: str) -> ModuleType:
    """benchmarks/STEM.py, executed as `module_name` and registered under it (its dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location(module_name, BENCHMARKS / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(module_name, module)
    spec.loader.exec_module(module)
    return module
