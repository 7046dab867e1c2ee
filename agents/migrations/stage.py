"""The migrate stage: each service's migrations, run once, before any traffic moves.

It applies only to runs whose change holds migrations (``Run.migrations``, recorded by the analyze
stage) and comes after build and iac and before deploy; in an environment that wants an approval the
router parks the run before this stage, and that one approval covers the deploy too. Each service with
migrations gets its command (``services[].migrations.command``, else its tool's default) in a one-off
container of the image the build stage pushed, with the service's environment and resolved secrets.
Anything it cannot run is refused before anything runs; a failure or a timeout fails the run, so the
deploy stage never starts.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import docker

from agents.build.image import docker_client
from agents.context import AgentContext, StageResult
from agents.deploy.stage import built_images
from agents.deploy.targets.secrets import resolve
from agents.migrations.container import Outcome, container_name, run_once
from agents.migrations.detect import ServiceMigrations
from agents.migrations.found import in_change
from orchestra.errors import OrchestraError

logger = logging.getLogger(__name__)

DEFAULT_COMMANDS = {"alembic": ["alembic", "upgrade", "head"],
                    "django": ["python", "manage.py", "migrate", "--noinput"]}
TOOL_NAMES = {"alembic": "Alembic", "django": "Django", "flyway": "Flyway", "liquibase": "Liquibase",
              "sql": "plain SQL"}


@dataclass(frozen=True)
class Migration:
    """What runs for one service: its image, command and limit."""

    service: str
    tool: str
    image: str
    version: str
    argv: list[str]
    timeout_s: float


def run(ctx: AgentContext, *, client: docker.DockerClient | None = None) -> StageResult:
    """Run the change's migrations, service by service in dependency order; stop at the first failure."""
    found, _ = in_change(ctx)
    if not found:
        return StageResult(True, "no schema migrations in this change: nothing ran", {"skipped": True})
    off = [m.service for m in found if not ctx.config.service(m.service).migrations.enabled]
    try:
        plans = plan(ctx, [m for m in found if m.service not in off])
        secrets = resolve(ctx.config, ctx.run.env, "docker", secrets_file=ctx.settings.secrets_file) if plans \
            else {}
    except OrchestraError as exc:
        return StageResult(False, f"migrations not run: {exc.message}", {"hint": exc.hint, "ran": []})
    own = client is None and bool(plans)
    try:
        client = client or (docker_client(ctx.settings) if plans else None)
        return _apply(ctx, client, plans, secrets, off)
    except OrchestraError as exc:
        return StageResult(False, f"migrations failed: {exc.message}", {"hint": exc.hint})
    finally:
        if own and client is not None:
            client.close()


def plan(ctx: AgentContext, found: list[ServiceMigrations]) -> list[Migration]:
    """Each service's migration as it will run; OrchestraError naming what is missing, before anything runs."""
    images = built_images(ctx)
    plans = []
    for name in ctx.config.deploy_order([m.service for m in found]):
        entry = next(m for m in found if m.service == name)
        spec = ctx.config.service(name)
        if spec.runtime != "docker":
            raise OrchestraError(f"not supported yet: migrations of a `runtime: {spec.runtime}` service ({name})",
                                 hint=f"set services[{name}].migrations.enabled: false and run them yourself "
                                      "before the deploy")
        argv = spec.migrations.argv() or DEFAULT_COMMANDS.get(entry.tool)
        if argv is None:
            raise OrchestraError(f"{name} has {TOOL_NAMES[entry.tool]} migrations ({', '.join(entry.files[:3])}) "
                                 "and no command to run them",
                                 hint=f"set services[{name}].migrations.command in devops_orchestra.yaml, e.g. "
                                      + _example(entry.tool))
        image = images.get(name)
        if not image:
            raise OrchestraError(f"the run built no image for {name}: its migrations cannot run",
                                 hint="the build stage must build it first")
        plans.append(Migration(name, entry.tool, image["image"], str(image.get("version", "")), argv,
                               spec.migrations.timeout))
    return plans


def _apply(ctx: AgentContext, client: docker.DockerClient | None, plans: list[Migration],
           secrets: dict[str, str], off: list[str]) -> StageResult:
    ran: list[dict[str, Any]] = []
    for migration in plans:
        assert client is not None
        ctx.progress(f"migrating {migration.service}: `{' '.join(migration.argv)}` in {migration.image}",
                     service=migration.service, stage="migrate")
        outcome = run_once(client, image=migration.image, argv=migration.argv,
                           environment=_environment(ctx, migration, secrets),
                           name=container_name(migration.service, ctx.run.id),
                           labels={"orchestra.migrate": migration.service, "orchestra.run": ctx.run.id},
                           timeout_s=migration.timeout_s)
        ran.append(_record(migration, outcome))
        if not outcome.passed:
            rest = [m.service for m in plans[len(ran):]]
            return StageResult(False, f"migration of {migration.service} failed ({outcome.verdict()}); nothing was "
                               f"deployed. Last lines:\n{outcome.output or '(no output)'}",
                               {"ran": ran, "not_run": rest, "failed": migration.service,
                                "exit_code": outcome.exit_code, "hint": "fix the migration and deploy again"})
    done = ", ".join(f"{r['service']} (`{r['command']}`, {r['seconds']}s)" for r in ran)
    summary = f"applied: {done}" if ran else "nothing ran"
    if off:
        summary += f"; not run (migrations.enabled: false): {', '.join(off)}"
    return StageResult(True, summary, {"ran": ran, "disabled": off})


def _environment(ctx: AgentContext, migration: Migration, secrets: dict[str, str]) -> dict[str, str]:
    spec = ctx.config.service(migration.service)
    return {**spec.env_dict(), **secrets, "APP_VERSION": migration.version, "ORCHESTRA_ENV": ctx.run.env}


def _record(migration: Migration, outcome: Outcome) -> dict[str, Any]:
    return {"service": migration.service, "tool": migration.tool, "image": migration.image,
            "command": " ".join(migration.argv), "exit_code": outcome.exit_code, "seconds": outcome.seconds,
            "output": outcome.output, "passed": outcome.passed}


def _example(tool: str) -> str:
    return {"flyway": "`flyway -url=$DATABASE_URL migrate`",
            "liquibase": "`liquibase --changelog-file=db/changelog.xml update`",
            "sql": "`python migrate.py`"}.get(tool, "`python migrate.py`")
