"""What an agent gets to do its stage: the run, settings, its workspace, and a way to emit events.

Agents depend on this small context only: not on Slack, GitHub or RQ.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis import Redis

from orchestra.events import Event, EventBus, EventType
from orchestra.redaction import hold_keys
from orchestra.settings import Settings
from orchestra.store import Run

if TYPE_CHECKING:
    from orchestra.config import ProjectConfig


@dataclass
class StageResult:
    """What a stage concluded: did its gate pass, a one-line summary, and the details.

    ``later_s`` set: the stage has not concluded; it goes on in a scheduled check that far ahead
    (the watch), and no worker waits for it meanwhile.
    """

    passed: bool
    summary: str
    data: dict[str, Any] = field(default_factory=dict)
    later_s: float | None = None


@dataclass
class AgentContext:
    """The run an agent works on, where its code is, and how it reports."""

    run: Run
    settings: Settings
    redis: Redis
    bus: EventBus
    workspace: Path
    config: ProjectConfig
    actor: str = "agent"

    def __post_init__(self) -> None:
        # The project's secrets.keys: their values (in this process's environment) never leave it.
        hold_keys(self.config.secrets.keys)

    def emit(self, type: EventType, **data: Any) -> Event:
        return self.bus.emit(self.run.id, type, self.actor, **data)

    def progress(self, message: str, **data: Any) -> Event:
        return self.emit(EventType.PROGRESS, message=message, **data)
