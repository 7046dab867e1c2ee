"""The migrate stage end to end: a change with a migration is built, parked for production's approval, migrated in a
one-off container of its new image against a real PostgreSQL on loopback, and a failing migration stops the run
before the deploy stage.

Real dockerd and registry (the session's), a real PostgreSQL 15, a real worker process and the router.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from redis import Redis

from agents.migrations.container import run_once
from bot.slack.views import milestone
from jobs import approvals
from jobs.dispatch import dispatch
from jobs.graph import ANALYZE, BUILD, DEPLOY, IAC, MIGRATE, Graph
from jobs.router import Router
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.settings import Settings
from orchestra.store import RunStatus, RunStore
from tests.jobs.conftest import orchestra_env
from tests.support.docker_services import DockerEnv
from tests.support.postgres import Postgres, postgres_server
from tests.support.services import wait_for

pytestmark = pytest.mark.docker

# The iac stage stands in for the gated deploy stage (the graph is the router's parameter): after the
# approval at migrate, it must not park the run again.
APPROVED_GRAPH = Graph((ANALYZE, BUILD, MIGRATE, replace(IAC, approval=True)))
FAILING_GRAPH = Graph((ANALYZE, BUILD, MIGRATE, DEPLOY))

CONFIG = """\
project: {{name: ledger, language: python}}
deployment:
  services:
    - name: ledger
      path: ledger
      port: 5000
      env: {{DB_HOST: 127.0.0.1, DB_PORT: "{port}", DB_USER: app, DB_NAME: ledger}}
      migrations: {{command: python3 migrate.py, timeout: 30s}}
secrets: {{keys: [DB_PASSWORD]}}
environments:
  production: {{approval_required: true, approvers: [U0BOB], deployers: [U0ALICE]}}
  staging: {{approval_required: false, approvers: [U0BOB]}}
"""

# A migration runner as teams write them: it logs where it connects (password included) and echoes a failing
# statement whole. The stage must keep both out of the thread.
MIGRATE_PY = """\
import os, pathlib, sys
import pg8000.native

dsn = f"postgresql://{os.environ['DB_USER']}:{os.environ['DB_PASSWORD']}@{os.environ['DB_HOST']}:{os.environ['DB_PORT']}"
print("connecting to", dsn, flush=True)
db = pg8000.native.Connection(os.environ["DB_USER"], password=os.environ["DB_PASSWORD"], host=os.environ["DB_HOST"],
                              port=int(os.environ["DB_PORT"]), database=os.environ["DB_NAME"])
db.run("CREATE TABLE IF NOT EXISTS applied (name text PRIMARY KEY)")
done = {row[0] for row in db.run("SELECT name FROM applied")}
for path in sorted(pathlib.Path("migrations").glob("*.sql")):
    if path.name in done:
        continue
    for statement in filter(str.strip, path.read_text().split(";")):
        try:
            db.run(statement)
        except Exception as exc:
            print("failed:", statement.strip(), flush=True)
            print(f"on {dsn}: {exc}", flush=True)
            sys.exit(3)
    db.run("INSERT INTO applied VALUES (:name)", name=path.name)
    print("applied", path.name, flush=True)
"""

APP_PY = """\
import http.server, os

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

address = (os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "5000")))
http.server.HTTPServer(address, Health).serve_forever()
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def commit(repo: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message)


@pytest.fixture(scope="module")
def database() -> Iterator[Postgres]:
    with postgres_server(password=f"pw-{secrets.token_hex(12)}", database="ledger") as server:
        yield server


@pytest.fixture
def repo(tmp_path: Path, database: Postgres) -> Path:
    """The ledger service without migrations, then a commit that adds one (the change a run deploys)."""
    repo = tmp_path / "ledger-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {"devops_orchestra.yaml": CONFIG.format(port=database.port), "ledger/app.py": APP_PY,
                  "ledger/migrate.py": MIGRATE_PY, "ledger/requirements.txt": "pg8000==1.31.6\n",
                  "ledger/migrations/.keep": ""}, "the ledger")
    return repo


@pytest.fixture
def stage_settings(settings: Settings, docker_env: DockerEnv, database: Postgres, tmp_path: Path) -> Settings:
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text(f"DB_PASSWORD={database.password}\n")
    return settings.with_(docker_host=docker_env.url, registry=docker_env.registry, base_image=docker_env.base_image,
                          build_ca_bundle=Path("/etc/ssl/certs/ca-certificates.crt"), secrets_file=secrets_file)


@pytest.fixture
def pipeline(redis: Redis, stage_settings: Settings) -> Iterator[Callable[[Graph], None]]:
    """A real worker process and a router in this process, on the graph the test gives."""
    env = {**orchestra_env(stage_settings), "DOCKER_HOST": stage_settings.docker_host or "",
           "ORCHESTRA_REGISTRY": stage_settings.registry, "ORCHESTRA_BASE_IMAGE": stage_settings.base_image,
           "ORCHESTRA_BUILD_CA_BUNDLE": str(stage_settings.build_ca_bundle),
           "ORCHESTRA_SECRETS_FILE": str(stage_settings.secrets_file)}
    worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--no-router"], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(graph: Graph) -> None:
        router = Router(redis, stage_settings, graph=graph, name="test-router")
        threads.append(threading.Thread(target=router.run, args=(stop,), daemon=True))
        threads[-1].start()

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def deploy(redis: Redis, settings: Settings, repo: Path, env: str, graph: Graph) -> str:
    intent = Intent(kind=IntentKind.DEPLOY, service="ledger", env=env, user="U0ALICE", source="slack")
    return dispatch(intent, redis=redis, settings=settings, repo=repo, graph=graph).id


def settles(redis: Redis, run_id: str, *statuses: RunStatus, timeout: float = 60) -> RunStatus:
    wait_for(lambda: RunStore(redis).get(run_id).status in statuses, timeout=timeout, interval=0.1,
             what=f"run {run_id} to become {', '.join(s.value for s in statuses)}")
    return RunStore(redis).get(run_id).status


def thread(redis: Redis, run_id: str) -> list[str]:
    """The Slack thread's lines for the run's milestones, as the relay words them."""
    return [line for e in EventBus(redis).replay(run_id) if (line := milestone(e))]


def test_production_parks_before_the_migration_and_one_approval_covers_the_deploy(
        redis: Redis, stage_settings: Settings, repo: Path, database: Postgres,
        pipeline: Callable[[Graph], None]) -> None:
    commit(repo, {"ledger/migrations/001_orders.sql": "CREATE TABLE orders (id int PRIMARY KEY, legacy text);\n"
                                                      "ALTER TABLE orders DROP COLUMN legacy;\n"}, "orders")
    pipeline(APPROVED_GRAPH)
    run_id = deploy(redis, stage_settings, repo, "production", APPROVED_GRAPH)
    assert settles(redis, run_id, RunStatus.AWAITING_APPROVAL, RunStatus.FAILED) == RunStatus.AWAITING_APPROVAL
    run = RunStore(redis).get(run_id)
    assert run.stage == "migrate" and run.migrations == ["ledger"]
    asked = next(e for e in EventBus(redis).replay(run_id) if e.type == EventType.APPROVAL_REQUESTED)
    assert asked.data["stage"] == "migrate"
    found = next(line for line in thread(redis, run_id) if "Migrations in this change" in line)
    assert "ledger (sql): ledger/migrations/001_orders.sql" in found  # shown before anyone approves
    assert "001_orders.sql:2 drops a column" in found and "expand/contract" in found
    assert database.query("SELECT to_regclass('public.orders')") == ""  # nothing ran before the approval

    assert approvals.decide(run_id, user="U0BOB", approve=True, redis=redis, settings=stage_settings).accepted
    wait_for(lambda: RunStore(redis).get(run_id).stage != "migrate" or RunStore(redis).get(run_id).status.finished,
             timeout=60, interval=0.1, what="the migrate stage to end")
    assert settles(redis, run_id, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.AWAITING_APPROVAL) \
        == RunStatus.SUCCEEDED, RunStore(redis).get(run_id).reason  # not parked again before the gated stage
    assert database.query("SELECT to_regclass('public.orders')") == "orders"
    assert database.query("SELECT name FROM applied") == "001_orders.sql"
    kinds = [e.type for e in EventBus(redis).replay(run_id)]
    assert kinds.count(EventType.APPROVAL_REQUESTED) == 1  # the gated stage after migrate did not ask again
    assert kinds.index(EventType.APPROVAL_GRANTED) < kinds.index(EventType.MIGRATIONS_APPLIED) \
        < kinds.index(EventType.IAC_READY)
    applied = next(line for line in thread(redis, run_id) if line.startswith(":white_check_mark: Migrations"))
    assert "ledger (`python3 migrate.py`" in applied


def test_a_failing_migration_stops_the_run_before_the_deploy_and_its_output_is_redacted_and_cut(
        redis: Redis, stage_settings: Settings, repo: Path, database: Postgres,
        pipeline: Callable[[Graph], None]) -> None:
    huge = "x" * 300_000  # echoed back by the runner in one line
    commit(repo, {"ledger/migrations/002_bad.sql": f"SELECT '{huge}' FROM no_such_table;\n"}, "bad migration")
    pipeline(FAILING_GRAPH)
    run_id = deploy(redis, stage_settings, repo, "staging", FAILING_GRAPH)
    if settles(redis, run_id, RunStatus.AWAITING_APPROVAL, RunStatus.FAILED) == RunStatus.AWAITING_APPROVAL:
        # a migration is high risk, and the risk policy asks for an approval even in staging
        assert approvals.decide(run_id, user="U0BOB", approve=True, redis=redis, settings=stage_settings).accepted
    assert settles(redis, run_id, RunStatus.SUCCEEDED, RunStatus.FAILED) == RunStatus.FAILED
    run = RunStore(redis).get(run_id)
    assert run.stage == "migrate" and "migration of ledger failed (exit code 3)" in (run.reason or "")
    assert run.strategy == "canary"  # the risk route: a change touching a migration folder goes canary
    events = EventBus(redis).replay(run_id)
    kinds = [e.type for e in events]
    assert EventType.DEPLOYMENT_TRIGGERED not in kinds and EventType.DEPLOYMENT_SUCCEEDED not in kinds
    assert not any(e.data.get("stage") == "deploy" for e in events)  # the deploy stage never started
    failed = next(line for line in thread(redis, run_id) if line.startswith(":x: Migrations"))
    assert "exit code 3" in failed and 'relation "no_such_table" does not exist' in failed
    assert "[REDACTED]" in failed and "[output cut" in failed and len(failed) < 5000
    everything = json.dumps([e.model_dump(mode="json") for e in events])
    assert database.password not in everything  # nowhere in the run's events, not only the thread


def test_a_migration_past_its_time_limit_is_stopped_and_its_container_removed(docker_env: DockerEnv) -> None:
    with docker_env.connected() as client:
        started = time.monotonic()
        outcome = run_once(client, image=docker_env.base_image, argv=["sh", "-c", "echo started; sleep 60"],
                           environment={}, name="orchestra-migrate-test-timeout", labels={}, timeout_s=2)
        assert time.monotonic() - started < 15
        assert not outcome.passed and outcome.exit_code is None
        assert outcome.verdict() == "stopped at its time limit of 2s" and outcome.output == "started"
        assert not client.containers.list(all=True, filters={"name": "orchestra-migrate-test-timeout"})
