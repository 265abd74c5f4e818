"""The layout's rules that import-linter does not check: no private name
imported from another module, and the pure rules free of Beam and I/O clients."""

import ast
import re
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


def _markdown():
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", _markdown(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_of_the_docs_names_a_file_that_exists(page):
    broken = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" not in target and not (page.parent / target).exists():
            broken.append(target)
    assert broken == []


def test_the_readme_is_the_front_door():
    words = len((REPO / "README.md").read_text().split())
    assert words <= 1500, f"README.md has {words} words: the detail belongs in docs/"
