"""The run's migrations: the change's files read from the checkout, recorded on the run and shown.

The analyze stage calls :func:`note` once it knows the change: the run records which services have
migrations (``Run.migrations``: the migrate stage applies only then, and the router parks before it
in an environment that wants an approval) and the thread gets a ``migrations_found`` event with every
destructive statement and its expand/contract advice, before anyone is asked to approve.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from agents.analysis.changes import change_of
from agents.context import AgentContext
from agents.migrations.detect import ServiceMigrations, find
from orchestra.events import EventType
from orchestra.store import RunStore

logger = logging.getLogger(__name__)

CANDIDATES = (".py", ".sql", ".xml", ".yaml", ".yml", ".json")
MAX_FILE_BYTES = 1_000_000
MAX_FILES = 5000  # a first commit is walked whole: a bound on what is read
SKIPPED_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", "dist", "build"}


def in_change(ctx: AgentContext) -> tuple[list[ServiceMigrations], list[str]]:
    """The migrations of the run's services in its change (the whole checkout when there is no parent
    commit: everything is new), and the migration files no service's folder holds."""
    change = change_of(ctx)
    paths = change.files if change is not None else _every_file(ctx.workspace)
    texts = {p: text for p in paths if (text := _read(ctx.workspace, p)) is not None}
    wanted = ctx.run.services or ctx.config.service_names()
    folders = {name: path for name, path in ctx.config.service_paths().items() if name in wanted}
    return find(texts, folders)


def note(ctx: AgentContext) -> list[ServiceMigrations]:
    """Record on the run which services have migrations and show them in the thread (none: nothing shown)."""
    found, orphans = in_change(ctx)
    RunStore(ctx.redis).update(ctx.run.id, migrations=[m.service for m in found])
    if found or orphans:
        ctx.emit(EventType.MIGRATIONS_FOUND, services=[m.to_dict() for m in found], orphans=orphans,
                 summary=describe(found, orphans))
    return found


def describe(found: list[ServiceMigrations], orphans: list[str]) -> str:
    """The thread's lines: per service its tool and files, then each destructive statement with its advice."""
    lines = []
    for entry in found:
        shown = ", ".join(entry.files[:5]) + (f" and {len(entry.files) - 5} more" if len(entry.files) > 5 else "")
        lines.append(f"{entry.service} ({entry.tool}): {shown}; they run in the migrate stage, before traffic moves")
        lines += [f"destructive: {d.one_line()}: {d.advice}" for d in entry.destructive[:10]]
        if len(entry.destructive) > 10:
            lines.append(f"and {len(entry.destructive) - 10} more destructive statement(s)")
    if orphans:
        lines.append(f"not in any service's folder, so nothing runs them: {', '.join(orphans[:5])}")
    return "\n".join(lines)


def _read(root: Path, path: str) -> str | None:
    """A changed file's text, if it is a candidate regular file inside the checkout (no link is followed)."""
    if not path.endswith(CANDIDATES):
        return None
    target = root / path
    try:
        if target.is_symlink() or not target.is_file() or root.resolve() not in target.resolve().parents:
            return None
        if target.stat().st_size > MAX_FILE_BYTES:
            logger.warning("migration candidate %s is over %s bytes: not read", path, MAX_FILE_BYTES)
            return None
        return target.read_text(errors="replace")
    except OSError:
        return None


def _every_file(root: Path) -> list[str]:
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        found += [str((Path(folder) / f).relative_to(root)) for f in sorted(files) if f.endswith(CANDIDATES)]
        if len(found) >= MAX_FILES:
            break
    return found[:MAX_FILES]
