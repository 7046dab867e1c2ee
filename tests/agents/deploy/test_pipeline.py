"""The example shop from source to live: build stage, build_ready event, deploy stage, second deploy."""
from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from redis import Redis

import agents.build
from agents.context import AgentContext, StageResult
from agents.deploy import stage as deploy
from orchestra.config import load_config
from orchestra.events import EventBus, EventType
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Run
from tests.support.docker_services import DockerEnv

pytestmark = pytest.mark.docker
SHOP = PROJECT_ROOT / "examples" / "shop"


@pytest.fixture
def client(docker_env: DockerEnv, settings: Settings) -> Iterator[docker.DockerClient]:
    with docker_env.connected(stop_deployed_in=settings.workdir) as client:
        yield client


def _ctx(repo: Path, settings: Settings, redis: Redis) -> AgentContext:
    run = Run(requested_by="U0ALICE", repo=str(repo), env="staging")
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="build")


def _publish(ctx: AgentContext, result: StageResult) -> None:
    """What the stage runner does with the build stage's result."""
    ctx.bus.emit(ctx.run.id, EventType.BUILD_READY, "build", **result.data, passed=result.passed,
                 summary=result.summary)


def test_the_shop_builds_two_images_and_goes_live_frontend_talking_to_backend(
        tmp_path: Path, settings: Settings, redis: Redis, docker_env: DockerEnv,
        client: docker.DockerClient) -> None:
    repo = tmp_path / "shop"
    shutil.copytree(SHOP, repo, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    settings = settings.with_(registry=docker_env.registry, base_image=docker_env.base_image,
                              build_ca_bundle=Path("/etc/ssl/certs/ca-certificates.crt"))
    ctx = _ctx(repo, settings, redis)
    built = agents.build.run(ctx, client=client)
    assert built.passed, built.summary
    first = built.data["version"]  # a plain folder: a hash of its content, the same for every image
    assert first.startswith("src-") and built.data["images"]["backend"]["image"].endswith(f"shop-backend:{first}")
    assert sorted(built.data["images"]) == ["backend", "frontend"]
    assert built.data["order"] == ["backend", "frontend"]
    generated = settings.workdir / "runs" / ctx.run.id / "build" / "frontend" / "Dockerfile"
    assert generated.read_text() == built.data["images"]["frontend"]["dockerfile"]
    _publish(ctx, built)

    live = deploy.run(ctx, client=client, pause_s=0)
    assert live.passed, live.summary
    frontend_url = live.data["live"]["frontend"]["url"]
    with urllib.request.urlopen(frontend_url + "/", timeout=5) as response:
        assert response.status == 200 and first in response.read().decode()

    (repo / "backend" / "app.py").write_text((repo / "backend" / "app.py").read_text() + "\n# v2\n")
    ctx2 = _ctx(repo, settings, redis)
    rebuilt = agents.build.run(ctx2, client=client)
    second = rebuilt.data["version"]
    assert second.startswith("src-") and second != first
    backend = rebuilt.data["images"]["backend"]
    assert backend["cached_steps"] >= 5 and backend["previous_size"] is not None
    _publish(ctx2, rebuilt)
    again = deploy.run(ctx2, client=client, pause_s=0)
    assert again.passed and sorted(again.data["changed"]) == ["backend", "frontend"]
    with urllib.request.urlopen(live.data["live"]["backend"]["url"] + "/health", timeout=5) as response:
        assert second in response.read().decode()
