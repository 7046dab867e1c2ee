"""The local Docker target: one container per release, host networking, a loopback port each."""
from __future__ import annotations

import logging
import re
import socket
import time
import urllib.error
import urllib.request

import docker
from docker.errors import APIError, ImageNotFound, NotFound

from agents.deploy.targets.state import Release
from orchestra.errors import StageFailed

logger = logging.getLogger(__name__)

LABEL = "orchestra.service"
HEALTH_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def container_name(service: str, env: str, version: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", f"orchestra-{service}-{env}-{version}")


class DockerTarget:
    """Start, health-check and stop releases on one Docker engine."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def start(self, *, service: str, env: str, image: str, version: str, run_id: str,
              extra_env: dict[str, str] | None = None, ref: str | None = None) -> Release:
        """Run ``image`` as a new container on a free loopback port (replacing a stopped namesake)."""
        name = container_name(service, env, version)
        self.remove(name)
        self._ensure_image(image)
        port = free_port()
        environment = {**(extra_env or {}), "PORT": str(port), "HOST": "127.0.0.1",
                       "APP_VERSION": version, "ORCHESTRA_ENV": env}
        try:
            self.client.containers.run(
                image, name=name, detach=True, network_mode="host", init=True, environment=environment,
                labels={LABEL: service, "orchestra.env": env, "orchestra.version": version,
                        "orchestra.run": run_id}, restart_policy={"Name": "unless-stopped"})
        except APIError as exc:
            raise StageFailed(f"{service} {version} did not start: {exc.explanation or exc}") from exc
        logger.info("run %s: started %s (%s) on port %s", run_id, name, image, port)
        return Release(version=version, image=image, port=port, container=name, run_id=run_id, ref=ref)

    def restart(self, release: Release, *, service: str, env: str) -> Release:
        """Start a stopped release again on its port (rollback to a release that was wound down)."""
        try:
            container = self.client.containers.get(release.container)
        except NotFound:
            return self.start(service=service, env=env, image=release.image, version=release.version,
                              run_id=release.run_id, ref=release.ref)
        if container.status != "running":
            container.start()
        return release

    def wait_healthy(self, release: Release, health: str, timeout: float = HEALTH_TIMEOUT_S) -> float:
        """Poll the release's health path until it answers 2xx; StageFailed (with its log) otherwise."""
        url = f"http://127.0.0.1:{release.port}{health}"
        start = time.monotonic()
        last = "no answer"
        while time.monotonic() - start < timeout:
            status = self._status(release.container)
            if status in ("exited", "dead", "restarting", "missing"):
                last = f"the container {status}"
                break
            last = _probe(url)
            if last == "ok":
                return round(time.monotonic() - start, 2)
            time.sleep(0.1)
        raise StageFailed(f"{release.container} is not healthy at {url}: {last}\n{self.logs(release)}",
                          hint="check the service's health path and that it listens on $HOST:$PORT")

    def running(self, release: Release) -> bool:
        return self._status(release.container) == "running"

    def stop(self, release: Release) -> None:
        """Stop (not remove) so that a rollback can start it again quickly."""
        try:
            self.client.containers.get(release.container).stop(timeout=5)
        except NotFound:
            pass

    def remove(self, name: str) -> None:
        try:
            self.client.containers.get(name).remove(force=True)
        except NotFound:
            pass

    def logs(self, release: Release, lines: int = 20) -> str:
        try:
            return self.client.containers.get(release.container).logs(tail=lines).decode(errors="replace")
        except NotFound:
            return ""

    def _status(self, name: str) -> str:
        try:
            return str(self.client.containers.get(name).status)
        except NotFound:
            return "missing"

    def _ensure_image(self, image: str) -> None:
        try:
            self.client.images.get(image)
        except ImageNotFound:
            repository, _, tag = image.rpartition(":")
            try:
                self.client.images.pull(repository, tag=tag)
            except APIError as exc:
                raise StageFailed(f"image {image} is neither local nor in the registry: {exc}") from exc


def _probe(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return "ok" if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except OSError as exc:
        return str(getattr(exc, "reason", exc))

