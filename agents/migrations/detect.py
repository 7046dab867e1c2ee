"""Schema migrations in a change: which tool, which files, and which statements destroy data.

Pure: paths and file texts in, findings out. A file is a migration by its place and, where the place
alone is ambiguous, its content:

- Alembic: ``versions/*.py`` holding ``revision =`` (only ``upgrade()`` is read: ``downgrade()`` drops
  by design);
- Django: ``migrations/0*.py``;
- Flyway: ``V<version>__<name>.sql`` and ``R__<name>.sql`` (``U`` undo files are not run by ``migrate``);
- Liquibase: a changelog (``.xml``, ``.yaml``, ``.yml``, ``.json``) holding ``databaseChangeLog``, or a
  formatted SQL file (``--liquibase formatted sql``); ``rollback`` blocks are not read;
- plain SQL: ``*.sql`` in a ``migrations``/``migration``/``migrate`` folder (``sql/migrations`` too).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

TOOLS = ("alembic", "django", "flyway", "liquibase", "sql")
MIGRATION_DIRS = {"migrations", "migration", "migrate", "db_migrations"}
FLYWAY_NAME = re.compile(r"^(?:V\d+(?:[._]\d+)*|R)__\w[\w.-]*\.sql$", re.I)
FLYWAY_UNDO = re.compile(r"^U\d+(?:[._]\d+)*__\w[\w.-]*\.sql$", re.I)
LIQUIBASE_EXT = {".xml", ".yaml", ".yml", ".json"}
ALEMBIC_REVISION = re.compile(r"^revision\s*(?::[^=]+)?=", re.M)

EXPAND_CONTRACT = ("expand/contract: add the new first, deploy code that works with both, migrate the data, "
                   "and remove the old in a later release")
ADVICE = {
    "drops a table": "deploy code that no longer reads or writes it first; drop it in a later release",
    "drops a column": "deploy code that no longer reads or writes it first; drop it in a later release",
    "renames": "add the new name beside the old one, write both, copy the data, switch reads, "
               "and drop the old name in a later release",
    "changes a column's type": "add a new column of the new type, write both, copy the data, switch reads, "
                               "and drop the old column in a later release",
    "empties a table": "the rows are gone for good: copy them somewhere first, or delete in a later release "
                       "once nothing needs them",
}

_SQL = [  # (pattern, kind): one line of SQL at a time
    (re.compile(r"\bDROP\s+TABLE\b", re.I), "drops a table"),
    (re.compile(r"\bDROP\s+COLUMN\b", re.I), "drops a column"),
    (re.compile(r"\bRENAME\s+(?:COLUMN|TO|TABLE)\b", re.I), "renames"),
    (re.compile(r"\b(?:ALTER|MODIFY)\s+(?:COLUMN\s+)?[\w\"`\[\].]+\s+(?:SET\s+DATA\s+)?TYPE\b", re.I),
     "changes a column's type"),
    (re.compile(r"\bMODIFY\s+COLUMN\b", re.I), "changes a column's type"),
    (re.compile(r"\bTRUNCATE\b", re.I), "empties a table"),
]
_PYTHON = [  # Alembic operations and Django migration operations
    (re.compile(r"\b(?:op|batch_op)\.drop_table\("), "drops a table"),
    (re.compile(r"\b(?:op|batch_op)\.drop_column\("), "drops a column"),
    (re.compile(r"\b(?:op|batch_op)\.rename_table\("), "renames"),
    (re.compile(r"\bmigrations\.DeleteModel\(|^\s*DeleteModel\("), "drops a table"),
    (re.compile(r"\bmigrations\.RemoveField\(|^\s*RemoveField\("), "drops a column"),
    (re.compile(r"\bmigrations\.Rename(?:Field|Model)\(|^\s*Rename(?:Field|Model)\("), "renames"),
]
_ALTER_COLUMN = re.compile(r"\b(?:op|batch_op)\.alter_column\(")
_LIQUIBASE_XML = [
    (re.compile(r"<dropTable\b"), "drops a table"),
    (re.compile(r"<dropColumn\b"), "drops a column"),
    (re.compile(r"<rename(?:Column|Table)\b"), "renames"),
    (re.compile(r"<modifyDataType\b"), "changes a column's type"),
]
_LIQUIBASE_YAML = [
    (re.compile(r"^\s*-?\s*dropTable\s*:"), "drops a table"),
    (re.compile(r"^\s*-?\s*dropColumn\s*:"), "drops a column"),
    (re.compile(r"^\s*-?\s*rename(?:Column|Table)\s*:"), "renames"),
    (re.compile(r"^\s*-?\s*modifyDataType\s*:"), "changes a column's type"),
]


@dataclass(frozen=True)
class Destructive:
    """One statement that loses or moves data, where it is, and what to do instead."""

    file: str
    line: int
    statement: str
    kind: str

    @property
    def advice(self) -> str:
        return f"{ADVICE[self.kind]} ({EXPAND_CONTRACT})"

    def one_line(self) -> str:
        return f"{self.file}:{self.line} {self.kind}: `{self.statement}`"

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "statement": self.statement, "kind": self.kind,
                "advice": self.advice}


@dataclass
class ServiceMigrations:
    """The migrations of one service in a change."""

    service: str
    tool: str
    files: list[str] = field(default_factory=list)
    destructive: list[Destructive] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"service": self.service, "tool": self.tool, "files": self.files,
                "destructive": [d.to_dict() for d in self.destructive]}


def tool_of(path: str, text: str) -> str | None:
    """The migration tool a file belongs to, or None when it is not a migration."""
    p = PurePosixPath(path)
    dirs = {d.lower() for d in p.parts[:-1]}
    name, suffix = p.name, p.suffix.lower()
    if suffix == ".py":
        if p.parent.name == "versions" and ALEMBIC_REVISION.search(text):
            return "alembic"
        if p.parent.name == "migrations" and name[:1] == "0":
            return "django"
        return None
    if suffix == ".sql" and text.lstrip().lower().startswith("--liquibase formatted sql"):
        return "liquibase"
    if FLYWAY_NAME.match(name):
        return "flyway"
    if suffix in LIQUIBASE_EXT and "databaseChangeLog" in text:
        return "liquibase"
    if suffix == ".sql" and dirs & MIGRATION_DIRS and not FLYWAY_UNDO.match(name):
        return "sql"
    return None


def destructive_statements(path: str, text: str, tool: str) -> list[Destructive]:
    """The statements of one migration file that drop, rename, retype or empty something."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix == ".py":
        lines = _upgrade_lines(text) if tool == "alembic" else _numbered(text)
        return _python(path, lines) + _scan(path, lines, _SQL)  # op.execute("DROP ...") / RunSQL
    if suffix == ".xml":
        return _scan(path, _outside_xml_rollback(text), _LIQUIBASE_XML + _SQL)
    if suffix in (".yaml", ".yml"):
        return _scan(path, _outside_yaml_rollback(text), _LIQUIBASE_YAML + _SQL)
    if suffix == ".json":
        return _scan(path, _numbered(text), _SQL)
    return _scan(path, _sql_lines(text), _SQL)


def find(changed: dict[str, str], services: dict[str, str]) -> tuple[list[ServiceMigrations], list[str]]:
    """The migrations among ``changed`` (path -> text) per service (name -> folder, "." the root).

    A file belongs to the service with the deepest folder holding it; files no service holds are
    returned apart (no service's image carries them, so nothing can run them)."""
    found: dict[str, ServiceMigrations] = {}
    orphans: list[str] = []
    for path in sorted(changed):
        tool = tool_of(path, changed[path])
        if tool is None:
            continue
        service = owner(path, services)
        if service is None:
            orphans.append(path)
            continue
        entry = found.setdefault(service, ServiceMigrations(service, tool))  # the first file's tool names it
        entry.files.append(path)
        entry.destructive += destructive_statements(path, changed[path], tool)
    return [found[s] for s in services if s in found], orphans


def owner(path: str, services: dict[str, str]) -> str | None:
    """The service whose folder holds ``path`` (the deepest one), or None."""
    best: tuple[int, str] | None = None
    parts = PurePosixPath(path).parts
    for name, folder in services.items():
        prefix = () if folder in (".", "") else PurePosixPath(folder).parts
        if parts[:len(prefix)] == prefix and len(parts) > len(prefix) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), name)
    return best[1] if best else None


def _numbered(text: str) -> list[tuple[int, str]]:
    return list(enumerate(text.splitlines(), start=1))


def _sql_lines(text: str) -> list[tuple[int, str]]:
    """Lines outside ``--`` and ``/* */`` comments (a block comment's lines are dropped whole)."""
    kept, in_block = [], False
    for number, line in _numbered(text):
        stripped = line.strip()
        if in_block:
            in_block = "*/" not in stripped
            continue
        if stripped.startswith("/*"):
            in_block = "*/" not in stripped
            continue
        code = line.split("--", 1)[0]
        if code.strip():
            kept.append((number, code))
    return kept


def _upgrade_lines(text: str) -> list[tuple[int, str]]:
    """The body of an Alembic revision's ``upgrade()``; the whole file when it does not parse."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return _numbered(text)
    lines = text.splitlines()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "upgrade":
            end = node.end_lineno or node.lineno
            return [(n, lines[n - 1]) for n in range(node.lineno, end + 1)]
    return []


def _python(path: str, lines: list[tuple[int, str]]) -> list[Destructive]:
    found = [Destructive(path, n, _shown(line), kind) for n, line in lines if not line.lstrip().startswith("#")
             for pattern, kind in _PYTHON if pattern.search(line)]
    for index, (number, line) in enumerate(lines):
        if _ALTER_COLUMN.search(line) and not line.lstrip().startswith("#"):
            call = _call_text(lines[index:])
            if "new_column_name" in call:
                found.append(Destructive(path, number, _shown(line), "renames"))
            if re.search(r"\btype_\s*=", call):
                found.append(Destructive(path, number, _shown(line), "changes a column's type"))
    return sorted(found, key=lambda d: d.line)


def _call_text(lines: list[tuple[int, str]]) -> str:
    """A call's text from its first line to its closing parenthesis (at most 30 lines)."""
    text, depth = "", 0
    for _, line in lines[:30]:
        text += line + "\n"
        depth += line.count("(") - line.count(")")
        if depth <= 0:
            break
    return text


def _outside_xml_rollback(text: str) -> list[tuple[int, str]]:
    kept, inside = [], False
    for number, line in _numbered(text):
        if inside:
            inside = "</rollback>" not in line
        elif "<rollback" in line:
            inside = "</rollback>" not in line and not re.search(r"<rollback\b[^>]*/>", line)
        else:
            kept.append((number, line))
    return kept


def _outside_yaml_rollback(text: str) -> list[tuple[int, str]]:
    kept, rollback_indent = [], None
    for number, line in _numbered(text):
        indent = len(line) - len(line.lstrip(" -"))
        if rollback_indent is not None and (not line.strip() or indent > rollback_indent):
            continue
        rollback_indent = None
        if re.match(r"^\s*-?\s*rollback\s*:", line):
            rollback_indent = indent
            continue
        if not line.lstrip().startswith("#"):
            kept.append((number, line))
    return kept


def _scan(path: str, lines: list[tuple[int, str]], patterns: list[tuple[re.Pattern[str], str]]) -> list[Destructive]:
    found: list[Destructive] = []
    for number, line in lines:
        kinds = dict.fromkeys(kind for pattern, kind in patterns if pattern.search(line))
        found += [Destructive(path, number, _shown(line), kind) for kind in kinds]
    return found


def _shown(line: str, limit: int = 160) -> str:
    line = " ".join(line.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"
