"""build.dockerfile acts in a real build: the build stage builds each service from the file it names
(Docker engine and registry started by the session)."""
from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis

import agents.build
from agents.context import AgentContext
from orchestra.config import CONFIG_FILENAME, load_config
from orchestra.events import EventBus
from orchestra.settings import Settings
from orchestra.store import Run
from tests.support.docker_services import DockerEnv

pytestmark = pytest.mark.docker
LABEL = "org.example.built-from"
DOCKERFILE = "FROM {base}\nLABEL {label}={name}\nCOPY app.py /app/app.py\nCMD [\"python\", \"/app/app.py\"]\n"


def test_the_build_stage_builds_from_build_dockerfile_not_the_default_one(
        tmp_path: Path, docker_env: DockerEnv, settings: Settings, redis: Redis) -> None:
    repo = tmp_path / "repo"
    (repo / "docker").mkdir(parents=True)
    (repo / "app.py").write_text("print('hello')\n")
    for path, name in (("Dockerfile", "default"), ("docker/prod.Dockerfile", "prod")):
        (repo / path).write_text(DOCKERFILE.format(base=docker_env.base_image, label=LABEL, name=name))
    (repo / CONFIG_FILENAME).write_text("project:\n  name: tpl\nbuild:\n  dockerfile: docker/prod.Dockerfile\n"
                                        "deployment:\n  services:\n    - name: api\n")
    build_settings = settings.with_(registry=docker_env.registry, base_image=docker_env.base_image)
    run = Run(requested_by="U0ALICE", repo=str(repo), services=[], env="staging")
    ctx = AgentContext(run=run, settings=build_settings, redis=redis, bus=EventBus(redis), workspace=repo,
                       config=load_config(repo), actor="build")
    with docker_env.connected() as client:
        result = agents.build.run(ctx, client=client)
        assert result.passed, result.summary
        image = result.data["images"]["api"]
        assert image["dockerfile_note"] == "the service's own prod.Dockerfile" and not image["dockerfile_generated"]
        assert client.images.get(image["image"]).labels[LABEL] == "prod"


def test_a_missing_build_dockerfile_fails_the_build_naming_it_instead_of_generating_one(
        tmp_path: Path, docker_env: DockerEnv, settings: Settings, redis: Redis) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "app.py").write_text("print('hello')\n")
    (repo / CONFIG_FILENAME).write_text("project:\n  name: tpl\nbuild:\n  dockerfile: Dockerfile.prod\n"
                                        "deployment:\n  services:\n    - name: api\n")
    build_settings = settings.with_(registry=docker_env.registry, base_image=docker_env.base_image)
    run = Run(requested_by="U0ALICE", repo=str(repo), services=[], env="staging")
    ctx = AgentContext(run=run, settings=build_settings, redis=redis, bus=EventBus(redis), workspace=repo,
                       config=load_config(repo), actor="build")
    with docker_env.connected() as client:
        result = agents.build.run(ctx, client=client)
    assert not result.passed
    assert result.summary == f"build of api failed: api: the configured dockerfile {repo / 'Dockerfile.prod'} " \
                             "does not exist"
