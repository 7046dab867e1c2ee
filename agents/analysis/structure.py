"""Structure problems: missing modules and an inconsistent layout.

- STR001 an import of a local module that does not exist (``from shop.db import q`` without
  ``shop/db.py``, ``from .models import Item`` without ``models.py`` next to it);
- STR002 a package directory without ``__init__.py`` where its siblings or its parent have one;
- STR003 a tests directory without any test file;
- STR004 Python code without any tests at all.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

from agents.findings import Finding, Severity
from agents.pysource import is_test_file, parse, python_files, rel

TOOL = "structure"


def structure_findings(root: Path) -> list[Finding]:
    """All structure findings for the repository at ``root``."""
    root = root.resolve()
    files = list(python_files(root))
    return [*_missing_modules(root, files), *_missing_inits(root, files),
            *_empty_test_dirs(root, files), *_no_tests(root, files)]


def _missing_modules(root: Path, files: list[Path]) -> list[Finding]:
    package_dirs = _dirs_by_name(root, files)
    findings = []
    for path in files:
        tree = parse(path)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                missing = _check_from(root, path, node, package_dirs)
            elif isinstance(node, ast.Import):
                missing = next((m for a in node.names if (m := _check_dotted(a.name, package_dirs))), None)
            else:
                continue
            if missing:
                findings.append(Finding(
                    tool=TOOL, rule="STR001", file=rel(root, path), line=node.lineno,
                    message=f"imports the local module `{missing}`, which does not exist",
                    suggestion=f"add `{missing.replace('.', '/')}.py` or fix the import"))
    return findings


def _check_from(root: Path, path: Path, node: ast.ImportFrom,
                package_dirs: dict[str, list[Path]]) -> str | None:
    if node.level == 0:
        return _check_dotted(node.module or "", package_dirs)
    if not node.module:
        return None  # `from . import name`: name may be defined in __init__
    base = path.parent
    for _ in range(node.level - 1):
        base = base.parent
    if not _resolves(base, node.module.split(".")):
        return "." * node.level + node.module
    return None


def _check_dotted(name: str, package_dirs: dict[str, list[Path]]) -> str | None:
    """The dotted name when its top is a local package but the rest does not exist there."""
    parts = name.split(".")
    homes = package_dirs.get(parts[0])
    if not homes or len(parts) == 1 or parts[0] in sys.stdlib_module_names:
        return None
    if any(_resolves(home, parts[1:]) for home in homes):
        return None
    return name


def _resolves(base: Path, parts: list[str]) -> bool:
    here = base
    for part in parts[:-1]:
        here = here / part
        if not here.is_dir():
            return False
    last = here / parts[-1]
    return last.with_suffix(".py").is_file() or last.is_dir() or here.joinpath(f"{parts[-1]}.pyi").is_file()


def _dirs_by_name(root: Path, files: list[Path]) -> dict[str, list[Path]]:
    """Every directory that holds Python code, by its name (candidate packages)."""
    dirs: dict[str, list[Path]] = {}
    for path in files:
        for parent in path.parents:
            if parent == root or root not in parent.parents:
                break
            if parent not in dirs.setdefault(parent.name, []):
                dirs[parent.name].append(parent)
    return dirs


def _missing_inits(root: Path, files: list[Path]) -> list[Finding]:
    code_dirs = {p.parent for p in files if p.parent != root}
    as_package = _used_as_package(files)
    findings = []
    for directory in sorted(code_dirs):
        if (directory / "__init__.py").exists() or is_test_file(rel(root, directory) + "/x.py"):
            continue  # test directories are collected by pytest with or without one
        if directory.name not in as_package:
            continue  # a directory of scripts, never imported as a package
        siblings = [d for d in code_dirs if d.parent == directory.parent and d != directory]
        parent_is_package = (directory.parent / "__init__.py").exists() and directory.parent != root
        if parent_is_package or (siblings and all((d / "__init__.py").exists() for d in siblings)):
            why = "its parent package has one" if parent_is_package else "its sibling packages have one"
            findings.append(Finding(
                tool=TOOL, rule="STR002", file=rel(root, directory), severity=Severity.WARNING,
                message=f"`{rel(root, directory)}` has Python modules but no __init__.py, while {why}",
                suggestion=f"add an empty {rel(root, directory)}/__init__.py"))
    return findings


def _used_as_package(files: list[Path]) -> set[str]:
    """Directory names that imports treat as packages (``x.mod`` or relative imports inside ``x``)."""
    names: set[str] = set()
    for path in files:
        tree = parse(path)
        for node in ast.walk(tree) if tree is not None else []:
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                names.add(path.parent.name)
            dotted = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            names.update(part for name in dotted for part in name.split(".")[:-1])
    return names


def _empty_test_dirs(root: Path, files: list[Path]) -> list[Finding]:
    test_dirs = sorted({d for d in root.rglob("*") if d.is_dir() and d.name in ("tests", "test")
                        and not any(p.startswith(".") or p in ("node_modules", "venv")
                                    for p in d.relative_to(root).parts)})
    findings = []
    for directory in test_dirs:
        if not any(_is_test_module(p) for p in files if directory in p.parents):
            findings.append(Finding(
                tool=TOOL, rule="STR003", file=rel(root, directory), severity=Severity.WARNING,
                message=f"`{rel(root, directory)}` holds no test files (test_*.py or *_test.py)",
                suggestion="add tests there, or remove the empty directory"))
    return findings


def _no_tests(root: Path, files: list[Path]) -> list[Finding]:
    code = [p for p in files if not is_test_file(rel(root, p))]
    if not code or any(_is_test_module(p) for p in files):
        return []
    return [Finding(tool=TOOL, rule="STR004", severity=Severity.WARNING,
                    message=f"{len(code)} Python module(s) and no tests at all",
                    suggestion="add tests/test_<module>.py files; the testing agent can generate "
                               "proven ones for you")]


def _is_test_module(path: Path) -> bool:
    return path.name.startswith("test_") or path.name.endswith("_test.py")
