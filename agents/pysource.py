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


class LocalModules:
    """Which top-level import names resolve inside the repository, seen from a given file.

    A name is local when a module or package of that name sits in the directory that holds the
    file's top-level package (or the file's own directory, for scripts and test directories) or
    any directory above it up to the root (pytest and scripts put those on ``sys.path``), or in a
    ``src/`` directory there.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[Path, set[str]] = {}

    def is_local(self, top: str, file: Path) -> bool:
        directory = file.parent
        while (directory / "__init__.py").exists() and directory != self.root:
            directory = directory.parent  # inside a package: its directory is not on sys.path
        while True:
            if top in self.names_at(directory) or top in self.names_at(directory / "src"):
                return True
            if directory == self.root or self.root not in directory.parents:
                return False
            directory = directory.parent

    def names_at(self, directory: Path) -> set[str]:
        if directory not in self._cache:
            names: set[str] = set()
            if directory.is_dir():
                for child in directory.iterdir():
                    if child.suffix == ".py":
                        names.add(child.stem)
                    elif child.is_dir() and child.name not in SKIP_DIRS and _has_python(child):
                        names.add(child.name)
            self._cache[directory] = names
        return self._cache[directory]


def _has_python(directory: Path) -> bool:
    return (directory / "__init__.py").exists() or any(directory.glob("*.py"))


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
