"""The house's structure: no import circle between modules (imports inside functions
included), no module using another package's private names, and no long function without a
docstring. The layers themselves are checked by ``lint-imports`` (pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")

SRC = Path(__file__).resolve().parents[1] / "src" / "invert"
MAX_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def test_no_import_cycle():
    graph = grimp.build_graph("invert", cache_dir=None)
    cycles = []
    for importer in sorted(graph.modules):
        if importer == "invert":  # the package's own namespace re-exports everything
            continue
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported == "invert" or not imported.startswith("invert"):
                continue
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None and importer not in ("invert.__main__",):
                cycles.append(f"{importer} -> {imported} -> ... -> {importer}: {back}")
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_imports_the_root_package():
    """``import invert`` inside the package would reach every layer (a hidden circle)."""
    graph = grimp.build_graph("invert", cache_dir=None)
    importers = sorted(m for m in graph.find_modules_that_directly_import("invert")
                       if m != "invert.__main__")
    assert importers == []


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_private_names_across_packages():
    """A module may use the private (``_name``) names of its own package only."""
    offenders = []
    for module, path in _modules().items():
        tree = ast.parse(path.read_text())
        pkg_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.module is None and node.level == 0:
                continue
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("invert"):
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and _package(target) != _package(module):
                    offenders.append(f"{module}: from {target} import {alias.name}")
    assert not offenders, "\n".join(offenders)


def _long_functions_without_docstring() -> list[str]:
    out = []
    for module, path in _modules().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES and ast.get_docstring(node) is None:
                    out.append(f"{module}.{node.name}: {lines} lines")
    return out


def test_long_functions_have_docstrings():
    assert _long_functions_without_docstring() == []
