"""A finding: one problem a check found in the code, with where and what to do about it."""
from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class Severity(StrEnum):
    ERROR = "error"  # fails the gate
    WARNING = "warning"  # reported, does not fail the gate
    INFO = "info"


class Finding(BaseModel):
    """One problem: tool and rule, file and line (relative to the repository root), and a suggestion."""

    tool: str
    rule: str
    message: str
    file: str | None = None
    line: int | None = None
    severity: Severity = Severity.ERROR
    suggestion: str | None = None

    def where(self) -> str:
        if self.file is None:
            return "(repository)"
        return f"{self.file}:{self.line}" if self.line else self.file

    def one_line(self) -> str:
        return f"{self.where()}: {self.rule} {self.message}"
