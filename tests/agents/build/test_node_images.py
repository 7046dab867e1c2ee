"""Node services built for real on the offline Node base image (scripts/build-node-base-image).

The base image is made once per engine data root and saved as a tarball beside the Python one;
`npm ci` fetches packages from the npm registry through this machine's TLS-intercepting proxy, so
the build gets the CA bundle (and must fail without it).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from redis import Redis

from agents.build.dockerfile import Images
from agents.build.image import BuildFailed
from agents.build.service import BuildRequest, ServiceSpec, build_service
from orchestra.errors import StageFailed
from orchestra.settings import PROJECT_ROOT, Settings
from tests.support.docker_services import CACHE_DIR, DockerEnv
from tests.support.services import free_port, wait_for

pytestmark = pytest.mark.docker
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
NODE_IMAGE = "orchestra-node:bookworm"
NODE_SCRIPT = PROJECT_ROOT / "scripts" / "build-node-base-image"
APPS = Path(__file__).parent / "node_apps"


def ensure_node_image(client: docker.DockerClient, url: str) -> str:
    """The Node base image in this engine: loaded from the saved tarball, or built once by the script."""
    if client.images.list(name=NODE_IMAGE):
        return NODE_IMAGE
    tarball = CACHE_DIR / "node-image.tar"
    if tarball.exists():
        with open(tarball, "rb") as data:
            client.images.load(data)
        if client.images.list(name=NODE_IMAGE):
            return NODE_IMAGE
    subprocess.run([str(NODE_SCRIPT), NODE_IMAGE], check=True, timeout=900,
                   env={**os.environ, "DOCKER_HOST": url})
    partial = tarball.with_suffix(".partial")
    with open(partial, "wb") as out:
        for chunk in client.images.get(NODE_IMAGE).save(named=True):
            out.write(chunk)
    partial.replace(tarball)
    return NODE_IMAGE


@pytest.fixture(scope="module")
def client(docker_env: DockerEnv) -> Iterator[docker.DockerClient]:
    with docker_env.connected() as client:
        ensure_node_image(client, docker_env.url)
        yield client


@pytest.fixture
def build_settings(settings: Settings, docker_env: DockerEnv) -> Settings:
    return settings.with_(registry=docker_env.registry, base_image=docker_env.base_image,
                          build_ca_bundle=CA_BUNDLE)


def _request(tmp_path: Path, env: DockerEnv, version: str) -> BuildRequest:
    return BuildRequest(project="fleet", version=version, out_dir=tmp_path / "out", push=False,
                        images=Images(python=env.base_image, node=NODE_IMAGE))


def _get(url: str) -> tuple[int, dict[str, object]]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status, json.loads(response.read())


def _app(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(APPS / name, tmp_path / name))


def test_the_node_base_image_has_debian_node_npm_and_the_node_user(client: docker.DockerClient) -> None:
    out = client.containers.run(NODE_IMAGE, ["sh", "-c", "node --version; npm --version; id node"],
                                remove=True, network_mode="none").decode()
    node, npm, user = out.splitlines()
    assert node.startswith("v18.") and npm.startswith("9.")  # Debian bookworm's, not nodesource's
    assert user.startswith("uid=1000(node) gid=1000(node)")


def test_the_node_base_image_script_skips_an_image_that_exists(client: docker.DockerClient,
                                                               docker_env: DockerEnv) -> None:
    proc = subprocess.run([str(NODE_SCRIPT), NODE_IMAGE], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "DOCKER_HOST": docker_env.url})
    assert proc.returncode == 0 and "already exists" in proc.stdout


def test_generated_express_dockerfile_builds_with_npm_ci_and_answers_its_health_check(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    spec = ServiceSpec("orders", _app(tmp_path, "express"), port=3000)
    result = build_service(client, spec, _request(tmp_path, docker_env, "e1"), settings=build_settings,
                           redis=redis)
    assert result["dockerfile_generated"] and result["stack"] == "node-express"
    assert "npm ci" in result["dockerfile"] and "npm prune --omit=dev" in result["dockerfile"]

    port = free_port()
    container = client.containers.run(result["image"], detach=True, network_mode="host", init=True,
                                      environment={"PORT": str(port)})
    try:
        assert wait_for(lambda: _get(f"http://127.0.0.1:{port}/health")[0] == 200, timeout=30,
                        what="the express container's health check")
        assert _get(f"http://127.0.0.1:{port}/")[1] == {"service": "orders", "user": 1000}
        files = container.exec_run(["ls", "-a", "/app"]).output.decode().split()
        assert "server.js" in files and "node_modules" in files
        assert ".orchestra-build" not in files and "Dockerfile" not in files  # the CA stays in the build
        assert container.exec_run(["test", "-e", "/app/node_modules/express/package.json"]).exit_code == 0
        health = client.api.inspect_container(container.id)["Config"]["Healthcheck"]["Test"]
        assert "/health" in " ".join(health)
    finally:
        container.remove(force=True)


def test_npm_ci_without_the_ca_bundle_fails_with_npms_own_error(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    """The proxy re-signs TLS: without the bundle npm cannot trust the registry, and the build says so."""
    spec = ServiceSpec("orders", _app(tmp_path, "express"), port=3000)
    request = _request(tmp_path, docker_env, "noca")
    request.nocache = True
    with pytest.raises(BuildFailed) as err:
        build_service(client, spec, request, settings=build_settings.with_(build_ca_bundle=None), redis=redis)
    assert "npm ci" in str(err.value) and "SELF_SIGNED_CERT_IN_CHAIN" in str(err.value)


def test_a_lock_file_that_disagrees_with_package_json_fails_the_build(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    """npm ci installs exactly the lock file: a package.json edited without it is refused, not resolved."""
    path = _app(tmp_path, "express")
    package = json.loads((path / "package.json").read_text())
    package["dependencies"]["left-pad"] = "1.3.0"
    (path / "package.json").write_text(json.dumps(package))
    with pytest.raises((BuildFailed, StageFailed)) as err:
        build_service(client, ServiceSpec("orders", path, port=3000), _request(tmp_path, docker_env, "lock"),
                      settings=build_settings, redis=redis)
    assert "in sync" in str(err.value) and "Missing: left-pad@1.3.0 from lock file" in str(err.value)


def test_the_fullstack_example_builds_and_its_page_server_reaches_the_api_container(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    """web/ is built with its Vite build in the image, dev dependencies pruned; it proxies to the API."""
    source = PROJECT_ROOT / "examples" / "fullstack"
    request = _request(tmp_path, docker_env, "fs1")
    ignore = shutil.ignore_patterns("node_modules", "dist", "coverage", "__pycache__")
    api = build_service(client, ServiceSpec("api", Path(shutil.copytree(source / "api", tmp_path / "api",
                                                                        ignore=ignore)), port=5002),
                        request, settings=build_settings, redis=redis)
    web = build_service(client, ServiceSpec("web", Path(shutil.copytree(source / "web", tmp_path / "web",
                                                                        ignore=ignore)), port=8080),
                        request, settings=build_settings, redis=redis)
    assert (api["stack"], web["stack"]) == ("python-flask", "node-express")

    api_port, web_port = free_port(), free_port()
    containers = [client.containers.run(api["image"], detach=True, network_mode="host", init=True,
                                        environment={"PORT": str(api_port), "APP_VERSION": "a1"})]
    containers.append(client.containers.run(web["image"], detach=True, network_mode="host", init=True,
                                            environment={"PORT": str(web_port), "APP_VERSION": "w1",
                                                         "API_URL": f"http://127.0.0.1:{api_port}"}))
    try:
        site = f"http://127.0.0.1:{web_port}"
        assert wait_for(lambda: _get(f"{site}/health")[0] == 200, timeout=30, what="the web container")
        assert wait_for(lambda: _get(f"{site}/api/books")[1].get("version") == "a1", timeout=30,
                        what="the API through the web container")
        with urllib.request.urlopen(f"{site}/", timeout=2) as page:
            assert '<div id="root"></div>' in page.read().decode()
        web_container = containers[1]
        assert web_container.exec_run(["test", "-f", "/app/dist/index.html"]).exit_code == 0
        assert web_container.exec_run(["test", "-e", "/app/node_modules/vite"]).exit_code != 0  # pruned
        assert web_container.exec_run(["id", "-u"]).output.decode().strip() == "1000"
    finally:
        for container in containers:
            container.remove(force=True)
