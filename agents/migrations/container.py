"""One migration command in a one-off container of the run's new image, within a time limit.

Host networking (the database is reached as the service reaches it, on this host's loopback), the
service's environment, no restart, ``--init`` so that a stop is immediate, and a capped json-file log
so that a command that prints without end cannot fill the engine's disk. The container is removed
afterwards whatever happened; only the last lines of its output are kept, redacted.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

import docker
import requests
from docker.errors import APIError, ImageNotFound, NotFound
from docker.types import LogConfig

from orchestra.errors import StageFailed
from orchestra.redaction import redact

TAIL_LINES = 40
TAIL_CHARS = 3000
LINE_CHARS = 400
WINDOW_CHARS = 64_000
LOG_LIMIT = LogConfig(type=LogConfig.types.JSON, config={"max-size": "5m", "max-file": "1"})


@dataclass(frozen=True)
class Outcome:
    """How a migration command ended: its exit code (None when it was stopped at its limit) and its output's end."""

    exit_code: int | None
    seconds: float
    output: str  # the last lines, redacted
    timeout_s: float

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def verdict(self) -> str:
        if self.exit_code is None:
            return f"stopped at its time limit of {self.timeout_s:g}s"
        return f"exit code {self.exit_code}"


def container_name(service: str, run_id: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", f"orchestra-migrate-{service}-{run_id}")


def run_once(client: docker.DockerClient, *, image: str, argv: list[str], environment: dict[str, str],
             name: str, labels: dict[str, str], timeout_s: float) -> Outcome:
    """Run ``argv`` in a new container of ``image`` and wait at most ``timeout_s`` for it to end."""
    _remove(client, name)  # a retried job's leftover
    _ensure_image(client, image)
    started = time.monotonic()
    try:
        container = client.containers.run(image, argv, name=name, detach=True, network_mode="host", init=True,
                                          environment=environment, labels=labels, log_config=LOG_LIMIT)
    except APIError as exc:
        raise StageFailed(f"the migration container of {image} did not start: {exc.explanation or exc}",
                          hint="check that the command exists in the image") from exc
    try:
        try:
            exit_code: int | None = int(container.wait(timeout=timeout_s)["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            exit_code = None
            container.kill()
        seconds = round(time.monotonic() - started, 2)
        raw = container.logs(stdout=True, stderr=True, tail=TAIL_LINES).decode(errors="replace")
    finally:
        _remove(client, name)
    return Outcome(exit_code, seconds, tail(raw), timeout_s)


def tail(text: str) -> str:
    """The end of ``text``, redacted, long lines shortened, at most TAIL_CHARS characters, saying what was cut."""
    # Redact a window of the end (the detectors are slow on megabytes) and drop the window's first, partial
    # line, where a secret the cut split would sit unrecognised; every later cut is of redacted text.
    raw = text.rstrip()
    window = raw[-WINDOW_CHARS:]
    lines = redact(window).splitlines()
    cut = len(window) < len(raw)
    if cut:
        lines = lines[1:]
    text = "\n".join(_shortened(line) for line in lines)
    if len(text) > TAIL_CHARS:
        text, cut = "…" + text[-TAIL_CHARS:], True
    return f"[output cut: its end only]\n{text}" if cut else text


def _shortened(line: str) -> str:
    if len(line) <= LINE_CHARS:
        return line
    keep = LINE_CHARS // 2
    return f"{line[:keep]} …[{len(line) - 2 * keep} characters cut]… {line[-keep:]}"


def _ensure_image(client: docker.DockerClient, image: str) -> None:
    try:
        client.images.get(image)
    except ImageNotFound:
        repository, _, tag = image.rpartition(":")
        try:
            client.images.pull(repository, tag=tag)
        except APIError as exc:
            raise StageFailed(f"image {image} is neither local nor in the registry: {exc}") from exc


def _remove(client: docker.DockerClient, name: str) -> None:
    try:
        client.containers.get(name).remove(force=True)
    except NotFound:
        pass
