"""What test generation produced: each candidate's verdict, coverage before/after, time and tokens."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

MAX_EVENT_CODE_CHARS = 20_000


class Candidate(BaseModel):
    """One generated test module and what proving it showed."""

    target: str  # module:qualname
    file_name: str
    origin: str  # llm | deterministic
    kept: bool
    reason: str
    mutants_tried: int = 0
    mutants_killed: int = 0
    lines_added: int = 0
    code: str = ""


class TestGenReport(BaseModel):
    """The outcome of one generation run for one service."""

    __test__ = False  # not a pytest test class

    service: str
    source: str  # llm | deterministic | llm+deterministic
    note: str
    coverage_before: float
    coverage_after: float
    targets: int
    candidates: list[Candidate] = Field(default_factory=list)
    kept_files: dict[str, str] = Field(default_factory=dict)
    seconds: float = 0.0
    tokens: int = 0

    @property
    def kept(self) -> list[Candidate]:
        return [c for c in self.candidates if c.kept]

    @property
    def kept_share(self) -> float:
        return len(self.kept) / len(self.candidates) if self.candidates else 0.0

    @property
    def mutation_score(self) -> float:
        """Mutants killed by the kept tests over mutants tried against them."""
        tried = sum(c.mutants_tried for c in self.kept)
        return sum(c.mutants_killed for c in self.kept) / tried if tried else 0.0

    def summary(self) -> str:
        return (f"{self.service}: {len(self.kept)} of {len(self.candidates)} generated test(s) kept "
                f"for {self.targets} uncovered function(s); coverage {self.coverage_before:.1f}% -> "
                f"{self.coverage_after:.1f}% ({self.source}; {self.note})")

    def event_data(self) -> dict[str, Any]:
        """For the test stage's event: figures, each verdict, and the kept files (bounded)."""
        files: dict[str, str] = {}
        room = MAX_EVENT_CODE_CHARS
        for name, code in self.kept_files.items():
            files[name] = code if len(code) <= room else "(too long for the event: see the report)"
            room -= min(len(code), room)
        return {
            "summary": self.summary(), "generator": self.source, "note": self.note,
            "coverage_before": self.coverage_before, "coverage_after": self.coverage_after,
            "kept_share": round(self.kept_share, 3), "mutation_score": round(self.mutation_score, 3),
            "verdicts": [{"target": c.target, "origin": c.origin, "kept": c.kept, "reason": c.reason}
                         for c in self.candidates],
            "files": files, "seconds": self.seconds, "tokens": self.tokens,
        }
