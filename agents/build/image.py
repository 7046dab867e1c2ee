"""Build context, image build with the docker SDK, push with error checks, and image size."""
from __future__ import annotations

import fnmatch
import io
import logging
import re
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException
from requests.exceptions import ReadTimeout

from agents.build.dockerfile import CA_IN_CONTEXT
from orchestra.errors import OrchestraError
from orchestra.settings import Settings

logger = logging.getLogger(__name__)

IGNORED = (".git", ".hg", "__pycache__", "*.pyc", ".venv", "venv", "node_modules", ".pytest_cache",
           ".mypy_cache", ".ruff_cache", ".orchestra-build", ".DS_Store")
LOG_TAIL = 20
# A build runs the service's own RUN steps (its pip install, its scripts): each step's container gets
# one CPU and 2 GiB without swap, and the whole build a deadline.
BUILD_LIMITS = {"memory": 2 * 1024 ** 3, "memswap": 2 * 1024 ** 3, "cpusetcpus": "0"}
BUILD_TIMEOUT_S = 1200


class BuildFailed(OrchestraError):
    """The image did not build; the message carries the end of the build log."""


class PushFailed(OrchestraError):
    """The registry refused the image."""


@dataclass
class BuildOutcome:
    """What one docker build did."""

    image_id: str
    steps: int = 0
    cached_steps: int = 0
    log: list[str] = field(default_factory=list)


def docker_client(settings: Settings) -> docker.DockerClient:
    """A client for the configured engine (Settings.docker_host, else the docker default)."""
    url = getattr(settings, "docker_host", None)
    try:
        if url:
            return docker.DockerClient(base_url=url, version="auto", timeout=300)
        return docker.from_env(version="auto", timeout=300)
    except DockerException as exc:
        raise OrchestraError(f"cannot reach the Docker engine: {exc}",
                             hint="start dockerd, or point DOCKER_HOST at it") from exc


def context_tar(service_dir: Path, dockerfile: str, *, ca_bundle: Path | None = None) -> io.BytesIO:
    """The build context as a tar: the service's files (minus junk and .dockerignore), the Dockerfile."""
    patterns = IGNORED + tuple(_dockerignore(service_dir))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(_files(service_dir, patterns)):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(service_dir)))
            _normalise(info)
            with open(path, "rb") as data:
                tar.addfile(info, data)
        _add_bytes(tar, "Dockerfile", dockerfile.encode())
        if ca_bundle is not None:
            _add_bytes(tar, CA_IN_CONTEXT, ca_bundle.read_bytes())
    buffer.seek(0)
    return buffer


def _files(root: Path, patterns: Iterable[str]) -> Iterable[Path]:
    patterns = tuple(patterns)
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(_ignored(part, str(rel), patterns) for part in rel.parts):
            continue
        if path.is_file() and rel.as_posix() not in ("Dockerfile", ".dockerignore"):
            yield path


def _ignored(part: str, rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(part, p) or fnmatch.fnmatch(rel, p.strip("/")) for p in patterns)


def _dockerignore(service_dir: Path) -> list[str]:
    path = service_dir / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith(("#", "!"))]


def _normalise(info: tarfile.TarInfo) -> None:
    """Same bytes for the same files, whoever checked them out and when: the layer cache hits."""
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build_image(client: docker.DockerClient, context: io.BytesIO, tag: str, *, nocache: bool = False,
                on_line: Callable[[str], None] | None = None, timeout_s: float = BUILD_TIMEOUT_S) -> BuildOutcome:
    """Build ``tag`` from a context tar with host networking, within limits; BuildFailed with the log's end."""
    outcome = BuildOutcome(image_id="")
    deadline = time.monotonic() + timeout_s
    try:
        stream = client.api.build(fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True,
                                  network_mode="host", decode=True, pull=False, nocache=nocache,
                                  container_limits=BUILD_LIMITS)
        for chunk in stream:
            _consume(chunk, outcome, on_line)
            if time.monotonic() > deadline:  # closing the stream makes the engine cancel the build
                raise BuildFailed(f"docker build of {tag} did not finish within {timeout_s:.0f}s",
                                  hint="make the build faster (cache dependencies in an early layer)")
    except APIError as exc:
        raise BuildFailed(f"docker build of {tag} failed: {exc.explanation or exc}") from exc
    except ReadTimeout as exc:
        raise BuildFailed(f"docker build of {tag} printed nothing for too long and was stopped",
                          hint="a RUN step hangs: make it finish, or print progress") from exc
    if not outcome.image_id:
        outcome.image_id = client.images.get(tag).id
    return outcome


def _consume(chunk: dict[str, Any], outcome: BuildOutcome, on_line: Callable[[str], None] | None) -> None:
    if "errorDetail" in chunk or "error" in chunk:
        message = chunk.get("errorDetail", {}).get("message") or chunk.get("error", "unknown error")
        tail = "\n".join(outcome.log[-LOG_TAIL:])
        raise BuildFailed(f"docker build failed: {message}\n{tail}",
                          hint="fix the Dockerfile or the dependency files and push again")
    if "aux" in chunk and "ID" in chunk["aux"]:
        outcome.image_id = chunk["aux"]["ID"]
    line = chunk.get("stream", "").rstrip()
    if not line:
        return
    outcome.log.append(line)
    if re.match(r"Step \d+/\d+ :", line):
        outcome.steps += 1
    elif "Using cache" in line:
        outcome.cached_steps += 1
    if on_line is not None:
        on_line(line)


def push_image(client: docker.DockerClient, repository: str, tag: str,
               auth: dict[str, str] | None = None) -> str:
    """Push and return the digest; the SDK reports failures only inside the stream."""
    digest = ""
    try:
        for chunk in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth):
            if "errorDetail" in chunk or "error" in chunk:
                message = chunk.get("errorDetail", {}).get("message") or chunk.get("error")
                raise PushFailed(f"push of {repository}:{tag} failed: {message}",
                                 hint="check that the registry is running and accepts pushes")
            digest = chunk.get("aux", {}).get("Digest", digest)
    except APIError as exc:
        raise PushFailed(f"push of {repository}:{tag} failed: {exc.explanation or exc}") from exc
    if not digest:
        raise PushFailed(f"push of {repository}:{tag} reported no digest",
                         hint="check the registry's log")
    return digest


def image_size(client: docker.DockerClient, ref: str) -> int:
    return int(client.images.get(ref).attrs.get("Size", 0))


def timed(func: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = func()
    return result, round(time.monotonic() - start, 2)
