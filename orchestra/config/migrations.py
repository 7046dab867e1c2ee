"""``services[].migrations``: how a service's schema migrations run in the migrate stage.

The migrate stage runs ``command`` (or the tool's default: ``alembic upgrade head``, ``python manage.py
migrate --noinput``) as a one-off container of the run's new image, within ``timeout``; Flyway,
Liquibase and plain SQL folders have no default and need a command. ``enabled: false`` shows the
migrations in the thread and runs nothing (the team runs them itself).
"""
from __future__ import annotations

import shlex

from pydantic import Field, field_validator

from orchestra.config.environments import StrictModel
from orchestra.config.types import Duration

MAX_TIMEOUT_S = 1800.0  # the migrate stage's job limit (jobs/graph.py) leaves room above it


class Migrations(StrictModel):
    command: str | None = None
    timeout: Duration = Field(default=300.0)
    enabled: bool = True

    @field_validator("command")
    @classmethod
    def _one_command(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"`{value}` is not a command ({exc}); write it as you would in a shell, e.g. "
                             "`flyway -locations=filesystem:db/migration migrate`") from exc
        if not words:
            raise ValueError("migrations.command is empty; name the command that applies the migrations, "
                             "or leave it out for Alembic (`alembic upgrade head`) and Django "
                             "(`python manage.py migrate --noinput`)")
        return value

    @field_validator("timeout")
    @classmethod
    def _bounded(cls, value: float) -> float:
        if not 1 <= value <= MAX_TIMEOUT_S:
            raise ValueError(f"migrations.timeout = {value:g}s is out of range; give between 1s and "
                             f"{MAX_TIMEOUT_S / 60:g}m")
        return value

    def argv(self) -> list[str] | None:
        """The command as the container's argument list (no shell runs it)."""
        return shlex.split(self.command) if self.command else None
