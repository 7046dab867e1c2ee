"""Walking a repository's Python sources: which files, which local module names, which imports."""
from __future__ import annotations

import ast
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SKIP_DIRS = frozenset({
    ".git", ".hg", ".venv", "venv", "env", ".env", "node_modules", "__pycache__", "build", "dist",
    ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", "site-packages", ".eggs",
})


@dataclass(frozen=True)
class Import:
    """One absolute import: its top-level name, the full dotted name, where, and whether it is guarded."""

    top: str
    name: str
    file: str
    line: int
    guarded: bool = False  # inside `try: ... except ImportError`


def python_files(root: Path) -> Iterator[Path]:
    """Every .py file under ``root``, skipping virtualenvs, caches and VCS directories."""
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel[:-1]):
            continue
        yield path


def parse(path: Path) -> ast.Module | None:
    """The module's syntax tree, or None when it does not parse (the lint stage reports that)."""
    try:
        return ast.parse(path.read_text(encoding="utf-8", errors="replace"), filename=str(path))
    except (SyntaxError, ValueError):
        logger.debug("skipping %s: does not parse", path)
        return None


def rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def is_test_file(relpath: str) -> bool:
    parts = relpath.split("/")
    name = parts[-1]
    return (name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"
            or any(p in ("tests", "test") for p in parts[:-1]))


def local_names(root: Path) -> set[str]:
    """Names importable from inside the repository: every module and package directory name.

    A script's own directory is on ``sys.path``, so a sibling module anywhere counts as local.
    """
    names: set[str] = set()
    for path in python_files(root):
        if path.stem != "__init__":
            names.add(path.stem)
        for parent in path.relative_to(root).parents:
            if parent.name:
                names.add(parent.name)
    return names


def imports_of(tree: ast.Module, relpath: str) -> list[Import]:
    """Absolute imports in a module (relative imports are always local)."""
    guarded_lines = _guarded_lines(tree)
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            found.append(Import(name.split(".")[0], name, relpath, node.lineno,
                                node.lineno in guarded_lines))
    return found


def _guarded_lines(tree: ast.Module) -> set[int]:
    """Line numbers inside a ``try`` body whose handlers catch ImportError (optional imports)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            for stmt in node.body:
                lines.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    return lines


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError", "Exception")
               for n in names)
