"""The code map: a service's functions, classes and methods, and how much of each the tests cover."""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

from agents.pysource import is_test_file, parse, python_files, rel
from agents.testing.venvs import run_python
from orchestra.settings import Settings

COVERAGE_TIMEOUT_S = 300
OMIT = "tests/*,test/*,*/tests/*,*/test/*,test_*.py,*/test_*.py,*_test.py,conftest.py,*/conftest.py,setup.py"


@dataclass
class CodeItem:
    """One function, method or class, with the statement lines of its body and which are covered."""

    file: str
    module: str
    qualname: str
    kind: str  # function | method | class
    line: int
    end_line: int
    statements: set[int] = field(default_factory=set)
    covered: set[int] = field(default_factory=set)

    @property
    def coverage(self) -> float:
        return 100.0 * len(self.covered) / len(self.statements) if self.statements else 100.0

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "qualname": self.qualname, "kind": self.kind, "line": self.line,
                "statements": len(self.statements), "covered": len(self.covered),
                "coverage": round(self.coverage, 1)}


@dataclass
class Coverage:
    """Line coverage of a service's own code (tests omitted): statements and executed lines per file."""

    statements: dict[str, set[int]] = field(default_factory=dict)
    executed: dict[str, set[int]] = field(default_factory=dict)

    @property
    def percent(self) -> float:
        total = sum(len(s) for s in self.statements.values())
        done = sum(len(self.executed.get(f, set()) & s) for f, s in self.statements.items())
        return round(100.0 * done / total, 1) if total else 100.0

    def lines(self) -> set[tuple[str, int]]:
        return {(f, n) for f, lines in self.executed.items() for n in lines}


def measure(python: Path, root: Path, tests: list[str], *, settings: Settings, data_dir: Path,
            timeout: float = COVERAGE_TIMEOUT_S) -> tuple[int, Coverage, str]:
    """Run pytest on ``tests`` (all tests when empty) under coverage; (pytest exit code, coverage, output)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    data, report = data_dir / ".coverage", data_dir / "coverage.json"
    data.unlink(missing_ok=True)
    proc = run_python(python, ["-m", "coverage", "run", "--source=.", f"--omit={OMIT}",
                               f"--data-file={data}", "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                      cwd=root, settings=settings, timeout=timeout, extra_env={"PYTHONDONTWRITEBYTECODE": "1"},
                      writable=[data_dir])
    rep = run_python(python, ["-m", "coverage", "json", f"--data-file={data}", "-o", str(report)],
                     cwd=root, settings=settings, timeout=120, writable=[data_dir])
    coverage = read_coverage(report) if rep.returncode == 0 else Coverage()
    return proc.returncode, coverage, (proc.stdout + proc.stderr)[-4000:]


def read_coverage(report: Path) -> Coverage:
    files = json.loads(report.read_text())["files"]
    return Coverage(
        statements={f: set(v["executed_lines"]) | set(v["missing_lines"]) for f, v in files.items()},
        executed={f: set(v["executed_lines"]) for f, v in files.items()})


def code_map(root: Path, coverage: Coverage | None = None) -> list[CodeItem]:
    """Functions, methods and classes of the non-test modules under ``root``, with their coverage."""
    items: list[CodeItem] = []
    for path in python_files(root):
        relpath = rel(root, path)
        tree = None if is_test_file(relpath) else parse(path)
        if tree is None:
            continue
        module = module_name(relpath)
        for item in _items(tree, relpath, module):
            if coverage is not None:
                statements = coverage.statements.get(relpath, set())
                item.statements = {n for n in statements if item.line < n <= item.end_line}
                item.covered = item.statements & coverage.executed.get(relpath, set())
            items.append(item)
    return items


def module_name(relpath: str) -> str:
    """Dotted import name of a repository-relative module path."""
    parts = relpath.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _items(tree: ast.Module, relpath: str, module: str) -> list[CodeItem]:
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            out.append(_item(node, relpath, module, node.name, "function"))
        elif isinstance(node, ast.ClassDef):
            out.append(_item(node, relpath, module, node.name, "class"))
            out += [_item(m, relpath, module, f"{node.name}.{m.name}", "method") for m in node.body
                    if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)]
    return out


def _item(node: ast.AST, relpath: str, module: str, qualname: str, kind: str) -> CodeItem:
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    return CodeItem(relpath, module, qualname, kind, node.lineno, node.end_lineno or node.lineno)
