"""`orchestra run --env staging` puts the example live through the real queue; a rollback run to its ref restores it.

Real dockerd, registry, nginx and Prometheus (started by the test session), real burst workers.
"""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis

from agents.observability.live import targets_path
from jobs.dispatch import dispatch
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.settings import Settings
from orchestra.store import Audit, RunStatus, RunStore
from tests.jobs.conftest import orchestra_env
from tests.support.docker_services import DockerEnv
from tests.support.prometheus import prometheus_server
from tests.support.services import wait_for

pytestmark = pytest.mark.docker


@pytest.fixture
def deploy_settings(settings: Settings, docker_env: DockerEnv) -> Iterator[Settings]:
    with docker_env.connected(stop_deployed_in=settings.workdir), \
            prometheus_server(targets_file=targets_path(settings.workdir)) as prometheus:
        yield settings.with_(docker_host=docker_env.url, registry=docker_env.registry,
                             base_image=docker_env.base_image, prometheus_url=prometheus.url,
                             build_ca_bundle=Path("/etc/ssl/certs/ca-certificates.crt"))


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**orchestra_env(settings), "DOCKER_HOST": settings.docker_host or "",
           "ORCHESTRA_REGISTRY": settings.registry, "ORCHESTRA_BASE_IMAGE": settings.base_image,
           "ORCHESTRA_PROMETHEUS_URL": settings.prometheus_url,
           "ORCHESTRA_BUILD_CA_BUNDLE": str(settings.build_ca_bundle)}
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, capture_output=True,
                          text=True, timeout=900)


def page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def commit_on(repo: Path, branch: str, start: str, change: Callable[[Path], None]) -> None:
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "checkout", "-q", "-B", branch, start], check=True)
    change(repo)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", f"{branch}"], check=True)
    subprocess.run([*git, "checkout", "-q", "main"], check=True)


def short_watch(repo: Path) -> None:
    config = repo / "devops_orchestra.yaml"
    config.write_text(config.read_text().replace("watch: 30s", "watch: 8s"))


def backend_change(note: str) -> Callable[[Path], None]:
    """A change of the backend's code: medium risk, so the run takes the environment's own path (a change
    of the configuration alone is high risk and waits for an approval; documentation alone builds nothing)."""
    def change(repo: Path) -> None:
        app = repo / "backend" / "app.py"
        app.write_text(app.read_text() + f"# {note}\n")
    return change


def test_a_staging_run_goes_live_and_a_rollback_run_restores_the_previous_version(
        deploy_settings: Settings, demo_repo: Path, redis: Redis) -> None:
    commit_on(demo_repo, "short-watch", "main", short_watch)
    commit_on(demo_repo, "short-watch", "short-watch", backend_change("v1"))
    first = run_cli(deploy_settings, "run", "--repo", str(demo_repo), "--ref", "short-watch", "--env", "staging",
                    "--user", "U0ALICE")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for stage_event in ("code_analysis_result", "test_results", "build_ready", "deployment_succeeded",
                        "observation_passed"):
        assert stage_event in first.stdout
    run_id = first.stdout.splitlines()[0].split()[1]
    live = next(e for e in EventBus(redis).replay(run_id) if e.type == EventType.DEPLOYMENT_SUCCEEDED).data
    frontend = live["live"]["frontend"]["url"]
    old_version = live["versions"]["backend"]
    first_commit = RunStore(redis).get(run_id).commit or ""
    assert "<h1>Shop</h1>" in page(frontend + "/") and old_version == first_commit[:7]
    backend = live["live"]["backend"]["current"]
    assert backend["image"].endswith(f"shop-backend:{first_commit[:7]}") and backend["ref"] == "short-watch"

    commit_on(demo_repo, "v2", "short-watch", backend_change("v2"))
    second = run_cli(deploy_settings, "run", "--repo", str(demo_repo), "--ref", "v2", "--env", "staging",
                     "--service", "backend", "--user", "U0ALICE")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    new_version = json.loads(page(live["live"]["backend"]["url"] + "/health"))["version"]
    assert new_version != old_version

    intent = Intent(kind=IntentKind.ROLLBACK, service="backend", env="staging", ref="short-watch", user="U0BOB",
                    source="slack")  # back to the version named by the ref it was deployed from
    rollback = dispatch(intent, redis=redis, settings=deploy_settings, repo=demo_repo)
    worker = subprocess.Popen([sys.executable, "-m", "cli", "worker"],
                              env={**orchestra_env(deploy_settings), "DOCKER_HOST": deploy_settings.docker_host or ""},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: RunStore(redis).get(rollback.id).status.finished, timeout=120, interval=0.2,
                 what="the rollback run")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert RunStore(redis).get(rollback.id).status == RunStatus.SUCCEEDED
    assert json.loads(page(live["live"]["backend"]["url"] + "/health"))["version"] == old_version
    changes = [(e["action"], e["detail"]["version"]) for e in Audit(redis).entries(500)
               if e["action"] in ("went_live", "rolled_back") and e["detail"]["service"] == "backend"]
    assert changes == [("went_live", old_version), ("went_live", new_version), ("rolled_back", old_version)]
