"""The Docker target: containers on loopback ports with host networking and an init process."""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from agents.build.dockerfile import Images
from agents.build.service import BuildRequest, ServiceSpec, build_service
from agents.deploy.targets.docker import LABEL, DockerTarget
from orchestra.errors import StageFailed
from orchestra.settings import Settings
from tests.support.docker_services import DockerEnv
from tests.support.sample_apps import plain_app

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def image(docker_env: DockerEnv, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("target")
    with docker_env.connected() as client:
        result = build_service(client, ServiceSpec("probe", plain_app(root / "probe"), 8000),
                               BuildRequest("shop", "t1", root / "out", Images(python=docker_env.base_image),
                                            push=False),
                               settings=Settings(registry=docker_env.registry))
    return str(result["image"])


@pytest.fixture
def target(docker_env: DockerEnv) -> Iterator[DockerTarget]:
    with docker_env.connected() as client:
        yield DockerTarget(client)
        for container in client.containers.list(all=True, filters={"label": LABEL}):
            container.remove(force=True)


def test_a_release_runs_on_host_networking_with_init_and_stops_fast(target: DockerTarget, image: str) -> None:
    release = target.start(service="probe", env="dev", image=image, version="t1", run_id="r1")
    assert target.wait_healthy(release, "/health") < 30
    container = target.client.containers.get(release.container)
    config = container.attrs["HostConfig"]
    assert config["NetworkMode"] == "host" and config["Init"] is True
    assert container.attrs["Config"]["Labels"]["orchestra.version"] == "t1"
    started = time.monotonic()
    target.stop(release)
    stopped_in = time.monotonic() - started
    assert not target.running(release)
    container.reload()
    # The init process forwarded SIGTERM to python, which died of it (128 + 15); 137 would mean
    # Docker gave up after the 5 s stop timeout and killed it.
    assert container.attrs["State"]["ExitCode"] == 143
    assert stopped_in < 5  # well before that timeout
    target.restart(release, service="probe", env="dev")
    assert target.wait_healthy(release, "/health") < 30


def test_an_image_that_is_nowhere_is_a_clear_error(target: DockerTarget, docker_env: DockerEnv) -> None:
    with pytest.raises(StageFailed, match="neither local nor in the registry"):
        target.start(service="probe", env="dev", image=f"{docker_env.registry}/shop-ghost:v0", version="v0",
                     run_id="r1")
