"""The layout's rules that import-linter does not check: no private name
imported from another module, and the pure rules free of Beam and I/O clients."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pipelines", "transforms", "schemas", "reporting", "simulator", "benchmarks", "devtools")


def _modules():
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [alias.name for alias in node.names], node.lineno


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(REPO)))
def test_no_private_name_is_imported_from_another_module(path):
    own = tuple(f"{p}." for p in PACKAGES) + PACKAGES
    private = [
        f"line {line}: from {module} import {name}"
        for module, names, line in _imports(path)
        if module.startswith(own)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert private == []
