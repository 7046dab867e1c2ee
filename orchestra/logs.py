"""The process's own log lines: text for people, or one JSON object per line for log pipelines.

Every line carries the run id and stage of the :func:`run_context` it was logged in (the stage runner
and the relays open one), else the first run id its message names (``run r-20250101-abc123: ...``).
Every line is redacted of secrets (:class:`RedactFilter`), its traceback included, in both formats.
Light to import (the secret detector loads on the first line): every command sets this up, and
``orchestra --help`` stays fast.
"""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from orchestra.ids import RUN_ID
from orchestra.redaction import redact

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_current: ContextVar[tuple[str, str | None] | None] = ContextVar("orchestra_run", default=None)


@contextmanager
def run_context(run_id: str, stage: str | None = None) -> Iterator[None]:
    """Lines logged inside the block (in this thread or task) carry ``run_id`` and ``stage``."""
    token = _current.set((run_id, stage))
    try:
        yield
    finally:
        _current.reset(token)


class RunFilter(logging.Filter):
    """Puts ``run_id`` and ``stage`` on every record: from ``run_context``, else from the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        run_id, stage = _current.get() or (None, None)
        if run_id is None and (found := RUN_ID.search(record.getMessage())):
            run_id = found.group(0)
        record.__dict__.update(run_id=run_id, stage=stage)
        return True


class RedactFilter(logging.Filter):
    """Takes secrets out of a record before any formatter sees it: message, arguments, traceback, stack.

    The message is rendered here (``msg % args``) so a secret passed as an argument is caught too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg, record.args = redact(record.getMessage()), None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
            if record.stack_info:
                record.stack_info = redact(record.stack_info)
        except Exception as exc:  # a line we cannot check does not leave as it is
            record.msg, record.args = f"(log line withheld: redaction failed: {type(exc).__name__})", None
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, and run_id, stage, exc when there are any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key in ("run_id", "stage"):
            if getattr(record, key, None):
                line[key] = getattr(record, key)
        if record.exc_info or record.exc_text:
            line["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(line, default=str)


def setup_logging(log_format: str, *, verbose: bool = False) -> None:
    """Configure the root logger once per process: ``text`` for people, ``json`` for log pipelines."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[log_handler(log_format)])
    logging.captureWarnings(log_format == "json")  # a library's warning would otherwise break the JSON lines


def log_handler(log_format: str, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing ``log_format`` lines (with run id and stage) to ``stream`` (default stderr)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactFilter())  # first: it renders the message once, safely, for the run filter too
    handler.addFilter(RunFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    return handler
