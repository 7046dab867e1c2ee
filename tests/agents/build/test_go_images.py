"""Go services built for real on the offline Go base image (scripts/build-go-base-image).

The base image (Debian's golang-go, made with debootstrap) is built once per engine data root and saved
as a tarball beside the Python and Node ones. A service that uses only the standard library builds
into an empty image with its static binary and a health probe; one that requires modules, and Java,
get a generated, linted Dockerfile and a plain "not built here" instead of a build that cannot work.
"""
from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from redis import Redis

from agents.build.detect import Stack, detect_stack
from agents.build.dockerfile import Images, generate
from agents.build.image import BuildFailed
from agents.build.service import BuildRequest, ServiceSpec, build_service
from orchestra.errors import OrchestraError, StageFailed
from orchestra.settings import PROJECT_ROOT, Settings
from tests.support.docker_services import DockerEnv, ensure_base_image
from tests.support.files import write_files
from tests.support.services import free_port, wait_for

GO_IMAGE = "orchestra-go:bookworm"
GO_SCRIPT = PROJECT_ROOT / "scripts" / "build-go-base-image"

MAIN_GO = """package main

import (
	"encoding/json"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	})
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"service": "inventory", "user": os.Getuid()})
	})
	if err := http.ListenAndServe(os.Getenv("HOST")+":"+os.Getenv("PORT"), nil); err != nil {
		panic(err)
	}
}
"""
GO_MOD = "module example.com/inventory\n\ngo 1.19\n"
WITH_MODULES = GO_MOD + "\nrequire (\n\tgithub.com/gorilla/mux v1.8.1 // routing\n)\n"


def ensure_go_image(docker_url: str) -> str:
    """The Go base image in this engine: loaded from the saved tarball, or built once by the script."""
    return ensure_base_image(docker_url, GO_IMAGE, tarball_name="go-image.tar", script=GO_SCRIPT)


@pytest.fixture(scope="module")
def client(docker_env: DockerEnv) -> Iterator[docker.DockerClient]:
    with docker_env.connected() as client:
        ensure_go_image(docker_env.url)
        yield client


@pytest.fixture
def build_settings(settings: Settings, docker_env: DockerEnv) -> Settings:
    return settings.with_(registry=docker_env.registry, base_image=docker_env.base_image)


def _request(tmp_path: Path, env: DockerEnv, version: str) -> BuildRequest:
    return BuildRequest(project="fleet", version=version, out_dir=tmp_path / "out", push=False,
                        images=Images(python=env.base_image, go=GO_IMAGE))


def _service(tmp_path: Path, go_mod: str = GO_MOD, main: str = MAIN_GO) -> Path:
    return write_files(tmp_path / "inventory", {"go.mod": go_mod, "main.go": main})


@pytest.mark.docker
def test_the_go_base_image_has_debians_go_without_cgo_or_module_proxy(client: docker.DockerClient) -> None:
    out = client.containers.run(GO_IMAGE, ["sh", "-c", "go version; go env CGO_ENABLED GOPROXY"],
                                remove=True, network_mode="none").decode()
    assert out.splitlines() == ["go version go1.19.8 linux/amd64", "0", "off"]  # Debian bookworm's Go


@pytest.mark.docker
def test_the_go_base_image_script_skips_an_image_that_exists(client: docker.DockerClient,
                                                             docker_env: DockerEnv) -> None:
    proc = subprocess.run([str(GO_SCRIPT), GO_IMAGE], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "DOCKER_HOST": docker_env.url})
    assert proc.returncode == 0 and "already exists" in proc.stdout


@pytest.mark.docker
def test_a_standard_library_service_builds_into_an_empty_image_and_is_healthy(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    spec = ServiceSpec("inventory", _service(tmp_path), port=8080)
    result = build_service(client, spec, _request(tmp_path, docker_env, "g1"), settings=build_settings,
                           redis=redis)
    assert result["dockerfile_generated"] and result["stack"] == "go-go"
    assert result["size"] < 20e6  # the binary, its probe and the CA bundle: no distribution

    port = free_port()
    container = client.containers.run(result["image"], detach=True, network_mode="host",
                                      environment={"PORT": str(port), "HOST": "127.0.0.1"})
    try:
        assert wait_for(lambda: _status(f"http://127.0.0.1:{port}/health") == 200, timeout=20,
                        what="the Go service's health path")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            assert json.loads(response.read()) == {"service": "inventory", "user": 10001}
        assert container.exec_run(["sh", "-c", "true"]).exit_code != 0  # no shell to run in it
        # Docker's own health check runs the probe built into the image, against the PORT it was given.
        assert wait_for(lambda: _health(client, container.id) == "healthy", timeout=30,
                        what="Docker's health check of the Go container")
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_a_failing_health_path_makes_the_container_unhealthy(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    """The probe is no rubber stamp: a service whose health path answers 503 is reported unhealthy."""
    broken = MAIN_GO.replace('w.Write([]byte("ok"))', "w.WriteHeader(http.StatusServiceUnavailable)")
    spec = ServiceSpec("inventory", _service(tmp_path, main=broken), port=8080)
    result = build_service(client, spec, _request(tmp_path, docker_env, "g2"), settings=build_settings,
                           redis=redis)
    probe = client.api.inspect_image(result["image"])["Config"]["Healthcheck"]["Test"]
    port = free_port()
    # The image's own probe, asked every second instead of every ten, so the test takes seconds.
    container = client.containers.run(result["image"], detach=True, network_mode="host",
                                      environment={"PORT": str(port), "HOST": "127.0.0.1"},
                                      healthcheck={"test": probe, "interval": 10**9, "retries": 2})
    try:
        assert wait_for(lambda: _status(f"http://127.0.0.1:{port}/") == 200, timeout=20, what="the service")
        assert wait_for(lambda: _health(client, container.id) == "unhealthy", timeout=30,
                        what="Docker to call the container unhealthy")
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_an_import_of_an_undeclared_module_fails_the_build_without_reaching_out(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    """go.mod requires nothing but the code imports a module: GOPROXY=off refuses to fetch it."""
    main = MAIN_GO.replace('"os"\n', '"os"\n\n\t"github.com/gorilla/mux"\n').replace(
        "func main() {", "var _ = mux.NewRouter\n\nfunc main() {")
    spec = ServiceSpec("inventory", _service(tmp_path, main=main), port=8080)
    with pytest.raises(BuildFailed) as err:
        build_service(client, spec, _request(tmp_path, docker_env, "g3"), settings=build_settings, redis=redis)
    assert "github.com/gorilla/mux" in str(err.value) and "GOPROXY=off" in str(err.value)


@pytest.mark.docker
def test_a_compile_error_fails_the_build_naming_file_and_line(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    spec = ServiceSpec("inventory", _service(tmp_path, main=MAIN_GO.replace("panic(err)", "panic(er)")),
                       port=8080)
    with pytest.raises(BuildFailed) as err:
        build_service(client, spec, _request(tmp_path, docker_env, "g4"), settings=build_settings, redis=redis)
    assert "main.go:17" in str(err.value) and "undefined: er" in str(err.value)


@pytest.mark.docker
def test_a_go_mod_asking_for_a_newer_go_is_refused_in_words(
        tmp_path: Path, client: docker.DockerClient, docker_env: DockerEnv, build_settings: Settings,
        redis: Redis) -> None:
    """Go 1.21+ writes `go 1.22.0` and `toolchain`, which Go 1.19 only reports as go.mod parse errors."""
    go_mod = GO_MOD.replace("go 1.19", "go 1.22.0\n\ntoolchain go1.22.5")
    spec = ServiceSpec("inventory", _service(tmp_path, go_mod=go_mod), port=8080)
    with pytest.raises(BuildFailed) as err:
        build_service(client, spec, _request(tmp_path, docker_env, "g5"), settings=build_settings, redis=redis)
    assert "go.mod asks for Go 1.22.0, and this build image has Go 1.19.8" in str(err.value)
    assert "ORCHESTRA_GO_BASE_IMAGE" in str(err.value)


@pytest.mark.parametrize(("files", "stack"), [
    ({"go.mod": WITH_MODULES, "main.go": MAIN_GO}, "go-modules"),
    ({"go.mod": GO_MOD.replace("go 1.19", "require golang.org/x/text v0.14.0\ngo 1.19"), "main.go": MAIN_GO},
     "go-modules"),
    ({"pom.xml": "<project/>"}, "java-maven"),
    ({"build.gradle": "plugins { id 'java' }\n"}, "java-gradle"),
])
def test_go_with_modules_and_java_are_generated_and_linted_but_not_built(
        tmp_path: Path, settings: Settings, files: dict[str, str], stack: str) -> None:
    """The build says why and where the Dockerfile is, before the engine is touched (no client given)."""
    path = write_files(tmp_path / "svc", files)
    request = BuildRequest("fleet", "m1", tmp_path / "out", push=False)
    with pytest.raises(StageFailed) as err:
        build_service(None, ServiceSpec("svc", path), request, settings=settings)  # type: ignore[arg-type]
    message = str(err.value)
    assert f"svc ({stack}): Dockerfile generated and linted (clean)" in message and "not built here" in message
    assert ("Go module proxy" if stack == "go-modules" else "no offline JDK base image") in message
    assert (tmp_path / "out" / "svc" / "Dockerfile").read_text().startswith("# Generated by DevOps Orchestra")


def test_a_go_mod_without_requirements_is_standard_library_only(tmp_path: Path) -> None:
    commented = GO_MOD + "// require github.com/gorilla/mux v1.8.1\nrequire ()\n"
    assert detect_stack(write_files(tmp_path, {"go.mod": commented})) == Stack("go", "go", "go.mod", ".")
    assert Stack("go", "go", "go.mod", ".").not_built_here is None


@pytest.mark.parametrize("health", ['/health";rm -rf /;"', "/health'\n", "/a$(id)", "health", "/h\\x"])
def test_a_health_path_that_could_break_out_of_the_template_is_refused(tmp_path: Path, health: str) -> None:
    with pytest.raises(OrchestraError, match="cannot go into a generated Dockerfile"):
        generate(Stack("go", "go", "go.mod", "."), tmp_path, service="s", port=8080, health=health,
                 images=Images())


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except OSError:
        return 0


def _health(client: docker.DockerClient, container_id: str) -> str:
    return str(client.api.inspect_container(container_id)["State"].get("Health", {}).get("Status", ""))
