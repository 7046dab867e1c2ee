"""Real builds on the local base image, pushed to a real registry (Docker engine started by the session)."""
from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from redis import Redis

from agents.build.dockerfile import Images
from agents.build.image import PushFailed, build_image, context_tar, push_image
from agents.build.service import BuildRequest, ServiceSpec, build_service
from orchestra.settings import Settings
from tests.support.docker_services import DockerEnv
from tests.support.sample_apps import flask_app, plain_app
from tests.support.services import free_port, wait_for

pytestmark = pytest.mark.docker
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture
def client(docker_env: DockerEnv) -> Iterator[docker.DockerClient]:
    with docker_env.connected() as client:
        yield client


@pytest.fixture
def build_settings(settings: Settings, docker_env: DockerEnv) -> Settings:
    return settings.with_(registry=docker_env.registry, base_image=docker_env.base_image,
                          build_ca_bundle=CA_BUNDLE)


def _request(tmp_path: Path, env: DockerEnv, version: str, project: str = "shop") -> BuildRequest:
    return BuildRequest(project=project, version=version, out_dir=tmp_path / "out",
                        images=Images(python=env.base_image))


def _get(url: str) -> tuple[int, dict[str, object]]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status, json.loads(response.read())


def test_generated_flask_dockerfile_builds_and_answers_its_health_check(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    spec = ServiceSpec("backend", flask_app(tmp_path / "backend"), port=5000)
    # a project of its own: the session's registry also holds what other tests pushed for "shop"
    result = build_service(client, spec, _request(tmp_path, docker_env, "v1", project="flaskimage"),
                           settings=build_settings, redis=redis)
    assert result["dockerfile_generated"] and result["stack"] == "python-flask"
    assert Path(result["dockerfile_path"]).read_text() == result["dockerfile"]
    assert not (tmp_path / "backend" / "Dockerfile").exists()  # never written into the repository
    assert result["digest"].startswith("sha256:") and result["size"] > 100e6
    tags = _get(f"http://{docker_env.registry}/v2/flaskimage-backend/tags/list")[1]
    assert tags["tags"] == ["v1"]

    port = free_port()
    container = client.containers.run(result["image"], detach=True, network_mode="host", init=True,
                                      environment={"PORT": str(port), "APP_VERSION": "v1"})
    try:
        assert wait_for(lambda: _get(f"http://127.0.0.1:{port}/health")[0] == 200, timeout=30,
                        what="the flask container's health check")
        assert _get(f"http://127.0.0.1:{port}/")[1]["version"] == "v1"
        user = client.images.get(result["image"]).attrs["Config"]["User"]
        assert user == "10001:10001"
        files = container.exec_run(["ls", "-a", "/app"]).output.decode().split()
        assert ".orchestra-build" not in files and "Dockerfile" not in files
    finally:
        container.remove(force=True)


def test_code_change_reuses_the_dependency_layers_and_reports_the_size_change(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    path = plain_app(tmp_path / "api", marker="one")
    spec = ServiceSpec("api", path, port=8000)
    first = build_service(client, spec, _request(tmp_path, docker_env, "c1"), settings=build_settings,
                          redis=redis)
    (path / "app.py").write_text((path / "app.py").read_text() + "\n# a code change, more bytes " * 2000)
    second = build_service(client, spec, _request(tmp_path, docker_env, "c2"), settings=build_settings,
                           redis=redis)
    assert first["stack"] == "python-plain" and first["previous_size"] is None
    # everything up to the code copy comes from the cache: venv, user, env
    assert second["cached_steps"] >= 5, second
    assert second["cached_steps"] < second["steps"]
    assert second["previous_size"] == first["size"]
    assert second["size_change"] == second["size"] - first["size"] and second["size_change"] > 0


def test_a_failing_build_reports_the_end_of_its_log(tmp_path: Path, client: docker.DockerClient,
                                                     docker_env: DockerEnv) -> None:
    from agents.build.image import BuildFailed

    dockerfile = f"FROM {docker_env.base_image}\nRUN echo about to fail && false\n"
    with pytest.raises(BuildFailed) as err:
        build_image(client, context_tar(tmp_path, dockerfile), "broken:1")
    assert "returned a non-zero code" in str(err.value) and "about to fail" in str(err.value)


def test_a_push_to_an_unreachable_registry_is_an_error(tmp_path: Path, client: docker.DockerClient,
                                                       docker_env: DockerEnv) -> None:
    repository = f"127.0.0.1:{free_port()}/nowhere"
    client.images.get(docker_env.base_image).tag(repository, "1")
    try:
        with pytest.raises(PushFailed, match="nowhere"):
            push_image(client, repository, "1")
    finally:
        client.images.remove(f"{repository}:1")


def test_the_base_image_script_skips_an_image_that_exists(docker_env: DockerEnv) -> None:
    import os
    import subprocess

    from tests.support.docker_services import BUILD_SCRIPT

    proc = subprocess.run([str(BUILD_SCRIPT), docker_env.base_image], capture_output=True, text=True,
                          env={**os.environ, "DOCKER_HOST": docker_env.url}, timeout=60)
    assert proc.returncode == 0 and "already exists; skipping" in proc.stdout
