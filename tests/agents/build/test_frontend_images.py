"""Front ends built for real on the offline Node base image: static sites served by nginx, and Next.js.

A static front end (a `build` script, no server of its own) is built with npm in one stage and only
the files its build made are served by Debian's nginx, unprivileged, in the next. A Next.js app is
built with `next build` and runs `next start` (or its standalone server) as the user `node`.
"""
from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.models.containers import Container
from redis import Redis

from agents.build.detect import Stack, detect_stack
from agents.build.dockerfile import Images
from agents.build.image import BuildFailed
from agents.build.service import BuildRequest, ServiceSpec, build_service
from orchestra.settings import Settings
from tests.support.docker_services import DockerEnv
from tests.support.files import write_files
from tests.support.services import free_port, wait_for

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
APPS = Path(__file__).parent / "node_apps"


@pytest.fixture(scope="module")
def client(docker_env: DockerEnv) -> Iterator[docker.DockerClient]:
    with docker_env.connected() as client:
        docker_env.node_image()
        yield client


@pytest.fixture
def build_settings(settings: Settings, docker_env: DockerEnv) -> Settings:
    return settings.with_(registry=docker_env.registry, base_image=docker_env.base_image,
                          build_ca_bundle=CA_BUNDLE)


def _build(client: docker.DockerClient, env: DockerEnv, settings: Settings, redis: Redis, tmp_path: Path,
           app: str, *, port: int = 8080, health: str = "/health") -> dict[str, object]:
    """Build a copy of the fixture ``app``."""
    path = Path(shutil.copytree(APPS / app, tmp_path / app))
    return _build_path(client, env, settings, redis, tmp_path, path, port=port, health=health)


def _build_path(client: docker.DockerClient, env: DockerEnv, settings: Settings, redis: Redis, tmp_path: Path,
                path: Path, *, port: int = 3000, health: str = "/health") -> dict[str, object]:
    request = BuildRequest(project="fleet", version=path.name, out_dir=tmp_path / "out", push=False,
                           images=Images(python=env.base_image, node=env.node_image()))
    return build_service(client, ServiceSpec(path.name, path, port=port, health=health), request,
                         settings=settings, redis=redis)


def _run(client: docker.DockerClient, image: object) -> tuple[Container, int]:
    """The container with the image's own health probe asked every second, and its port."""
    probe = client.api.inspect_image(str(image))["Config"]["Healthcheck"]["Test"]
    port = free_port()
    container = client.containers.run(str(image), detach=True, network_mode="host",
                                      environment={"PORT": str(port), "HOST": "127.0.0.1"},
                                      healthcheck={"test": probe, "interval": 10**9, "retries": 2})
    return container, port


def _get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of a raw GET: the path is sent exactly as given, never normalised."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode(errors="replace")
    finally:
        conn.close()


def _up(port: int, path: str) -> bool:
    try:
        return _get(port, path)[0] == 200
    except OSError:
        return False


def _health(client: docker.DockerClient, container_id: str) -> str:
    return str(client.api.inspect_container(container_id)["State"].get("Health", {}).get("Status", ""))


@pytest.mark.docker
def test_a_vite_front_end_is_built_and_only_its_build_is_served_by_unprivileged_nginx(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    result = _build(client, docker_env, build_settings, redis, tmp_path, "vite-static")
    assert result["dockerfile_generated"] and result["stack"] == "node-static"
    container, port = _run(client, result["image"])
    try:
        assert wait_for(lambda: _up(port, "/health"), timeout=20, what="nginx serving the front end")
        status, kind, page = _get(port, "/")
        assert status == 200 and "text/html" in kind and "<title>Catalogue</title>" in page
        assert "/src/main.js" not in page  # the built page, not the source one
        script = page.split('src="', 1)[1].split('"', 1)[0]
        assert script.startswith("/assets/index-") and script.endswith(".js")
        status, kind, bundle = _get(port, script)
        assert status == 200 and "javascript" in kind and "built by vite" in bundle
        assert _get(port, "/catalogue/item/7")[2] == page  # a client-side route gets the app
        assert "Uid:\t1000\t1000" in container.exec_run(["cat", "/proc/1/status"]).output.decode()  # nginx
        assert container.exec_run(["touch", "/srv/site/index.html"]).exit_code != 0  # the site is read-only
        assert wait_for(lambda: _health(client, container.id) == "healthy", timeout=20,
                        what="Docker's health check of the front end")
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_the_static_server_serves_nothing_but_the_build(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    """Sources, package files, the build CA and the image's own files are out of reach, however asked."""
    result = _build(client, docker_env, build_settings, redis, tmp_path, "vite-static")
    container, port = _run(client, result["image"])
    try:
        assert wait_for(lambda: _up(port, "/health"), timeout=20, what="nginx serving the front end")
        page = _get(port, "/")[2]
        for path in ("/package.json", "/package-lock.json", "/src/main.js", "/.orchestra-build/ca.pem",
                     "/vite.config.js", "/node_modules/vite/package.json"):
            assert _get(port, path)[2] == page, path  # the app's fallback page, not the file
        for path in ("/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2f..%2fetc/passwd",
                     "/assets/../../../../etc/passwd", "//etc/passwd"):
            status, _, body = _get(port, path)
            assert "root:x:0:0" not in body and (status == 400 or body == page), path
        assert container.exec_run(["test", "-e", "/srv/site/package.json"]).exit_code != 0
        assert container.exec_run(["sh", "-c", "ls -A /srv/site | sort | tr '\\n' ' '"]).output.decode() \
            == "assets index.html "
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_a_plain_build_script_writing_build_is_served_with_its_health_path(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    """No bundler: `npm run build` copies files into build/ (as Create React App names it)."""
    result = _build(client, docker_env, build_settings, redis, tmp_path, "plain-static", health="/healthz")
    container, port = _run(client, result["image"])
    try:
        assert wait_for(lambda: _up(port, "/healthz"), timeout=20, what="nginx on the plain front end")
        assert "All systems normal." in _get(port, "/")[2]
        assert _get(port, "/built.txt")[2] == "built by npm run build"
        status, kind, _ = _get(port, "/style.css")
        assert status == 200 and kind.startswith("text/css")
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_a_build_that_makes_no_page_fails_the_image_saying_where_it_looked(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    path = APPS / "plain-static"
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    package = json.loads((broken / "package.json").read_text())
    package["scripts"]["build"] = "mkdir -p out && cp -r public/. out/"
    (broken / "package.json").write_text(json.dumps(package))
    request = BuildRequest(project="fleet", version="nopage", out_dir=tmp_path / "out", push=False,
                           images=Images(python=docker_env.base_image, node=docker_env.node_image()))
    with pytest.raises(BuildFailed, match=r"npm run build made no index.html in dist/, dist/ or build/"):
        build_service(client, ServiceSpec("broken", broken), request, settings=build_settings, redis=redis)


@pytest.mark.parametrize(("package", "expected"), [
    ({"scripts": {"start": "react-scripts start", "build": "react-scripts build"},
      "dependencies": {"react": "18", "react-scripts": "5"}}, Stack("node", "static", "package.json", "build")),
    ({"scripts": {"dev": "vite", "start": "vite", "build": "vite build"}, "devDependencies": {"vite": "5"}},
     Stack("node", "static", "package.json", "dist")),
    ({"scripts": {"build": "tsc", "start": "node dist/server.js"}}, Stack("node", "express", "package.json",
                                                                         "index.js")),
    ({"scripts": {"build": "react-scripts build", "start": "serve -s build"},
      "dependencies": {"react-scripts": "5", "serve": "14"}}, Stack("node", "static", "package.json", "build")),
    ({"scripts": {"build": "vite build", "start": "server --port 80"}},  # not `serve `: a program of its own
     Stack("node", "express", "package.json", "index.js")),
    ({"scripts": {"build": "vite build"}, "dependencies": {"fastify": "4"}},
     Stack("node", "express", "package.json", "index.js")),
    ({"scripts": {"build": "vite build"}, "devDependencies": {"express": "4"}},  # a dev-only mock server
     Stack("node", "static", "package.json", "dist")),
])
def test_a_front_end_is_told_from_a_server(tmp_path: Path, package: dict[str, object], expected: Stack) -> None:
    assert detect_stack(write_files(tmp_path, {"package.json": json.dumps(package)})) == expected


def test_the_front_end_fixtures_are_detected_as_built() -> None:
    assert detect_stack(APPS / "vite-static").name == "node-static"
    assert detect_stack(APPS / "plain-static").name == "node-static"


@pytest.mark.docker
def test_a_nextjs_app_builds_with_next_build_and_its_standalone_server_answers_as_node(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    result = _build(client, docker_env, build_settings, redis, tmp_path, "nextjs", port=3000)
    assert result["dockerfile_generated"] and result["stack"] == "node-nextjs"
    assert "npm ci" in str(result["dockerfile"]) and "npm run build" in str(result["dockerfile"])
    container, port = _run(client, result["image"])
    try:
        assert wait_for(lambda: _up(port, "/health"), timeout=30, what="the Next.js server's health route")
        status, kind, body = _get(port, "/health")
        assert kind.startswith("application/json") and json.loads(body) == {"status": "ok", "service": "storefront"}
        status, _, page = _get(port, "/")
        assert status == 200 and "<h1>Storefront</h1>" in page and "served by uid <!-- -->1000" in page
        assert _get(port, "/robots.txt")[2] == "User-agent: *\nDisallow:\n"  # public/ is served
        chunk = page.split('src="/_next/static/', 1)[1].split('"', 1)[0]
        assert _get(port, f"/_next/static/{chunk}")[0] == 200  # the built client bundle
        files = container.exec_run(["ls", "-A", "/app"]).output.decode().split()
        assert "server.js" in files and ".orchestra-build" not in files and "app" not in files
        assert container.exec_run(["test", "-e", "/app/.next/cache"]).exit_code != 0
        assert wait_for(lambda: _health(client, container.id) == "healthy", timeout=20,
                        what="Docker's health check of the Next.js container")
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_a_nextjs_app_without_standalone_output_runs_next_start_on_its_production_dependencies(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    path = Path(shutil.copytree(APPS / "nextjs", tmp_path / "plain-next",
                                ignore=shutil.ignore_patterns("next.config.mjs")))
    result = _build_path(client, docker_env, build_settings, redis, tmp_path, path)
    container, port = _run(client, result["image"])
    try:
        assert wait_for(lambda: _up(port, "/health"), timeout=30, what="next start's health route")
        assert "served by uid <!-- -->1000" in _get(port, "/")[2]
        files = container.exec_run(["ls", "-A", "/app"]).output.decode().split()
        assert "server.js" not in files and {"node_modules", ".next", "package.json"} <= set(files)
        assert container.exec_run(["test", "-x", "/app/node_modules/.bin/next"]).exit_code == 0
        assert "next" in container.exec_run(["cat", "/proc/1/cmdline"]).output.decode()
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_a_page_that_does_not_compile_fails_the_build_naming_it(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    path = Path(shutil.copytree(APPS / "nextjs", tmp_path / "broken-next"))
    page = path / "app" / "page.js"
    page.write_text(page.read_text().replace("<h1>Storefront</h1>", "<h1>Storefront</h2>"))
    with pytest.raises(BuildFailed) as err:
        _build_path(client, docker_env, build_settings, redis, tmp_path, path)
    assert "npm run build" in str(err.value) and "app/page.js" in str(err.value)
