"""Crash-log summaries of a failed container: the error line and the last lines, secrets redacted."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from orchestra.redaction import redact

__all__ = ["CrashSummary", "redact", "summarize"]  # redact: the shared one, for the other answer modules

TAIL_LINES = 15
MAX_LINE = 300

_ERROR_LINE = re.compile(
    r"(?i)(traceback|error|exception|fatal|panic|killed|out of memory|segmentation fault)")


@dataclass(frozen=True)
class CrashSummary:
    """The line that says what went wrong, and the last lines before the end."""

    error: str | None
    tail: list[str] = field(default_factory=list)
    total_lines: int = 0

    def text(self) -> str:
        head = f"error: {self.error}" if self.error else "no error line found"
        return "\n".join([head, f"last {len(self.tail)} of {self.total_lines} lines:", *self.tail])


def summarize(log: str | bytes, *, tail: int = TAIL_LINES) -> CrashSummary:
    """Summarise a container's log: the last error-looking line and the last ``tail`` lines."""
    if isinstance(log, bytes):
        log = log.decode("utf-8", errors="replace")
    # The whole log first: a private key or a JSON credential spans lines, and a line alone hides its shape.
    lines = [_clip(line.rstrip()) for line in redact(log).splitlines() if line.strip()]
    return CrashSummary(error=_error_line(lines), tail=lines[-tail:], total_lines=len(lines))


def _error_line(lines: list[str]) -> str | None:
    """The last line that names an error; for a Python traceback that is its final line."""
    for line in reversed(lines):
        if _ERROR_LINE.search(line) and not line.lstrip().startswith(("File ", "Traceback")):
            return line.strip()
    return None


def _clip(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[:MAX_LINE] + "…"
