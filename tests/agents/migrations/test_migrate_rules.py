"""What the migrate stage refuses before anything runs, what it shows of a command's output, and its config field."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.migrations import stage
from agents.migrations.container import TAIL_CHARS, WINDOW_CHARS, tail
from jobs.graph import MIGRATE, PIPELINE
from orchestra.config import load_config
from orchestra.errors import ConfigError, OrchestraError
from orchestra.events import EventBus, EventType
from orchestra.redaction import hold
from orchestra.settings import Settings
from orchestra.store import Run, RunStore

CONFIG = """\
project: {{name: shop, language: python}}
deployment:
  services:
    - name: api
      path: api
      port: 5000
{api}
    - name: jobs
      path: jobs
      port: 5001
      runtime: {runtime}
"""


def repo_with(tmp_path: Path, files: dict[str, str], *, api: str = "", runtime: str = "docker") -> Path:
    repo = tmp_path / "shop"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "devops_orchestra.yaml").write_text(CONFIG.format(api=api, runtime=runtime))
    (repo / "api").mkdir()
    (repo / "api" / "app.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "second"], check=True)
    return repo


def context(redis: Redis, settings: Settings, repo: Path, *, built: bool = True) -> AgentContext:
    run = RunStore(redis).create(Run(requested_by="U0ALICE", repo=str(repo), env="staging"))
    ctx = AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                       config=load_config(repo))
    if built:  # the build stage's result, as the stage runner publishes it
        ctx.emit(EventType.BUILD_READY, passed=True, images={
            s: {"image": f"127.0.0.1:5000/shop-{s}:abc1234", "version": "abc1234"} for s in ("api", "jobs")})
    return ctx


def test_the_analyze_note_records_the_services_and_the_stage_applies_only_then(
        redis: Redis, settings: Settings, tmp_path: Path) -> None:
    from agents.migrations.found import note

    repo = repo_with(tmp_path, {"api/migrations/0002_drop.py": "operations = [migrations.RemoveField('a', 'b')]\n"})
    ctx = context(redis, settings, repo)
    assert [m.service for m in note(ctx)] == ["api"]
    run = RunStore(redis).get(ctx.run.id)
    assert run.migrations == ["api"] and MIGRATE.applies_to(run)
    shown = next(e for e in EventBus(redis).replay(run.id) if e.type == EventType.MIGRATIONS_FOUND)
    assert "api/migrations/0002_drop.py:1 drops a column" in shown.data["summary"]
    assert [s.name for s in PIPELINE.stages if s.applies_to(run)][4:6] == ["migrate", "deploy"]
    plain = run.model_copy(update={"migrations": []})
    assert not MIGRATE.applies_to(plain) and PIPELINE.after("iac", plain).name == "deploy"


def test_a_change_without_migrations_skips_saying_so(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"api/app.py": "x = 2\n"})
    result = stage.run(context(redis, settings, repo))
    assert result.passed and result.summary == "no schema migrations in this change: nothing ran"


@pytest.mark.parametrize(("files", "api", "runtime", "built", "refusal"), [
    ({"api/db/migration/V2__add.sql": "ALTER TABLE a ADD b int;"}, "", "docker", True,
     "api has Flyway migrations (api/db/migration/V2__add.sql) and no command to run them"),
    ({"api/migrations/001.sql": "CREATE TABLE a (id int);"}, "", "docker", True,
     "api has plain SQL migrations"),
    ({"jobs/migrations/0001_initial.py": "operations = []\n"}, "", "kubernetes", True,
     "not supported yet: migrations of a `runtime: kubernetes` service (jobs)"),
    ({"api/migrations/0001_initial.py": "operations = []\n"}, "", "docker", False,
     "the run built no image for api"),
])
def test_what_cannot_run_is_refused_before_anything_runs(redis: Redis, settings: Settings, tmp_path: Path,
                                                         files: dict[str, str], api: str, runtime: str,
                                                         built: bool, refusal: str) -> None:
    repo = repo_with(tmp_path, {**files, "jobs/app.py": "y = 1\n"}, api=api, runtime=runtime)
    result = stage.run(context(redis, settings, repo, built=built))
    assert not result.passed and refusal in result.summary and result.data["ran"] == []
    assert "migrations" in (result.data["hint"] or "") or "build" in (result.data["hint"] or "")


def test_a_disabled_service_is_shown_and_not_run(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"api/db/migration/V2__add.sql": "DROP TABLE a;"},
                     api="      migrations: {enabled: false}")
    result = stage.run(context(redis, settings, repo))
    assert result.passed and result.data == {"ran": [], "disabled": ["api"]}
    assert "not run (migrations.enabled: false): api" in result.summary


def test_the_tool_default_and_the_configured_command(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"api/migrations/0001_initial.py": "operations = []\n"})
    ctx = context(redis, settings, repo)
    found, _ = stage.in_change(ctx)
    assert stage.plan(ctx, found)[0].argv == ["python", "manage.py", "migrate", "--noinput"]
    repo2 = repo_with(tmp_path / "2", {"api/migrations/0001_initial.py": "operations = []\n"},
                      api="      migrations: {command: \"sh -c 'migrate --to \\\"head\\\"'\", timeout: 2m}")
    ctx2 = context(redis, settings, repo2)
    (planned,) = stage.plan(ctx2, stage.in_change(ctx2)[0])
    assert planned.argv == ["sh", "-c", 'migrate --to "head"'] and planned.timeout_s == 120


@pytest.mark.parametrize(("field", "problem"), [
    ("{command: ''}", "migrations.command is empty"),
    ("{command: \"alembic 'upgrade\"}", "is not a command"),
    ("{timeout: 0s}", "out of range"),
    ("{timeout: 3h}", "out of range"),
    ("{commands: alembic upgrade head}", "commands"),
])
def test_a_bad_migrations_field_is_refused(tmp_path: Path, field: str, problem: str) -> None:
    (tmp_path / "devops_orchestra.yaml").write_text(CONFIG.format(api=f"      migrations: {field}", runtime="docker"))
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path)
    assert problem in str(refused.value)


def test_output_is_redacted_and_only_its_end_is_kept() -> None:
    secret = "Zq8-migration-pw-7731"
    hold(secret)
    shown = tail("\n".join(f"step {n}" for n in range(5000)) + f"\nconnecting with {secret}\nfailed\n")
    assert secret not in shown and "[REDACTED]" in shown and shown.startswith("[output cut")
    assert shown.endswith("failed") and len(shown) <= TAIL_CHARS + 40
    assert tail("ok\n") == "ok"
    long_line = tail("a" * 2000)
    assert "…[1600 characters cut]…" in long_line and len(long_line) < 500


def test_a_secret_split_by_the_window_never_shows_its_half() -> None:
    secret = "Hx7-half-secret-value-93kq"
    hold(secret)
    half = len(secret) // 2
    text = "x\n" + secret + "\n" + "y" * (WINDOW_CHARS - half - 1)  # the window starts inside the secret
    shown = tail(text)
    assert secret[half:] not in shown and secret[:half] not in shown


def test_an_unknown_error_in_planning_is_not_swallowed(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"api/migrations/0001_initial.py": "operations = []\n"})
    ctx = context(redis, settings, repo)
    with pytest.raises(OrchestraError):
        stage.plan(ctx, [stage.ServiceMigrations("nope", "django", ["x"])])


def test_a_migration_file_linked_outside_the_checkout_is_not_read(redis: Redis, settings: Settings,
                                                                  tmp_path: Path) -> None:
    from agents.migrations.found import in_change

    outside = tmp_path / "outside.sql"
    outside.write_text("DROP TABLE secrets_of_the_host;")
    repo = repo_with(tmp_path, {"api/migrations/002_ok.sql": "CREATE TABLE a (id int);"})
    (repo / "api" / "migrations" / "003_link.sql").symlink_to(outside)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "a link"], check=True)
    ctx = context(redis, settings, repo)
    ctx.run.origin["changed_files"] = ["api/migrations/002_ok.sql", "api/migrations/003_link.sql",
                                       "../outside.sql"]
    found, orphans = in_change(ctx)
    assert [m.files for m in found] == [["api/migrations/002_ok.sql"]] and orphans == []
    assert not found[0].destructive
    from agents.migrations.found import _read  # the defence itself, whichever files the change names
    assert _read(repo, "api/migrations/003_link.sql") is None and _read(repo, "../outside.sql") is None
    assert _read(repo, "api/migrations/002_ok.sql") == "CREATE TABLE a (id int);"
