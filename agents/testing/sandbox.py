"""A box for a service's code: containers on the Docker engine.

Installing a service's requirements, running its tests, probing its functions and running generated
tests run the service's code, which the person who pushed wrote. Here it runs in a container of the
base image with no host environment (no REDIS_URL, no tokens), all capabilities dropped, CPU, memory,
process and time limits, and a writable layer thrown away afterwards:

- installing needs the network (PyPI): it runs with the host's network, sees only the requirement
  files (copied into a directory of their own, never the source tree) and pip's own settings, and
  takes wheels only, so no package's setup code runs while the network is there;
- tests and probes run with no network at all (``--network none``), the source read-only, the
  virtualenv read-only, and only the directories they report into writable.

Paths inside the container are the host's paths, so arguments, coverage files and JUnit reports
mean the same on both sides.
"""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from configparser import ConfigParser
from pathlib import Path
from typing import Any

from docker.errors import APIError, DockerException, ImageNotFound
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ReadTimeout

from agents.build.image import docker_client
from orchestra.errors import OrchestraError
from orchestra.settings import Settings

logger = logging.getLogger(__name__)

MARK = ".orchestra-sandbox"  # in a virtualenv's home: its python runs only in a container
CPUS = 1.0
MEMORY = "1g"
PIDS = 256
LABEL = "orchestra.sandbox"
PIP_CONFIG = Path("/etc/pip.conf")
# pip's settings that a sandboxed install may see (never a token: the rest of tool_env stays out).
PIP_ENV = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_DEFAULT_TIMEOUT", "PIP_CERT",
           "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
           "https_proxy", "no_proxy")
CA_IN_BOX = "/etc/ssl/orchestra-build-ca.pem"


def is_sandboxed(python: Path) -> bool:
    """Whether ``python`` belongs to a virtualenv built in a container (and so runs only in one)."""
    return (python.parent.parent / MARK).exists()


def image_id(settings: Settings, image: str | None = None, *, kind: str = "",
             script: str = "scripts/build-base-image") -> str:
    """The id of a sandbox's base image (``settings.base_image`` unless named): part of its cache keys.
    The box refuses to start without it rather than run tests unboxed. ``kind``: whose tests, for the
    messages ("Node " for the Node sandbox)."""
    image = image or settings.base_image
    try:
        client = docker_client(settings)
    except OrchestraError as exc:
        raise OrchestraError(f"the sandbox for {kind}services' tests needs the Docker engine: {exc.message}",
                             hint="start dockerd or set DOCKER_HOST (scripts/up does both); ORCHESTRA_SANDBOX=none "
                                  "runs services' tests on this host instead") from exc
    try:
        return str(client.images.get(image).id)
    except ImageNotFound as exc:
        raise OrchestraError(f"the {kind}sandbox image {image} is not in the Docker engine",
                             hint=f"build it with {script} (scripts/up does)") from exc
    except DockerException as exc:
        raise OrchestraError(f"the Docker engine did not answer: {exc}", hint="check DOCKER_HOST") from exc
    finally:
        client.close()


def install(home: Path, files: list[Path], tools: Iterable[str], *, settings: Settings,
            timeout: float) -> subprocess.CompletedProcess[str]:
    """Create a virtualenv at ``home`` and install ``tools`` and ``files`` into it, in an install box."""
    scratch = settings.workdir / "tmp"  # a path the engine's host shares when this worker is in a container
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="orchestra-reqs-", dir=scratch) as tmp:
        reqs = Path(tmp)
        for index, path in enumerate(files):
            shutil.copyfile(path, reqs / f"{index}-{path.name}")
        pip = [f"{home}/bin/python", "-m", "pip", "install", "--quiet", "--no-cache-dir", "--no-input",
               "--only-binary=:all:", *tools, *(a for f in sorted(reqs.iterdir()) for a in ("-r", str(f)))]
        script = f"python3 -m venv {shlex.quote(str(home))} && {shlex.join(pip)}"
        mounts = {home: "rw", reqs: "ro", **_pip_mounts(settings)}
        env = {k: v for k, v in settings.tool_env.items() if k in PIP_ENV}
        if settings.build_ca_bundle is not None:
            mounts[settings.build_ca_bundle] = "ro"
            env.update(PIP_CERT=str(settings.build_ca_bundle), SSL_CERT_FILE=str(settings.build_ca_bundle))
        proc = run_box(["sh", "-c", script], cwd=reqs, settings=settings, timeout=timeout, mounts=mounts,
                       env=env, network="host")
    if proc.returncode == 0:
        (home / MARK).write_text("this virtualenv was built in a container and runs only in one\n")
    return proc


def run_python(python: Path, args: list[str], *, cwd: Path, settings: Settings, timeout: float,
               writable: Iterable[Path] = (), extra_env: Mapping[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    """``python args`` in a test box: no network, ``cwd`` and the virtualenv read-only, ``writable`` not."""
    home = python.parent.parent
    mounts = {cwd: "ro", home: "ro"}
    for path in writable:
        path.mkdir(parents=True, exist_ok=True)
        mounts[path] = "rw"
    env = {"PATH": f"{home}/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", **(extra_env or {})}
    return run_box([str(python), *args], cwd=cwd, settings=settings, timeout=timeout, mounts=mounts, env=env,
                   network="none")


def run_box(command: list[str], *, cwd: Path, settings: Settings, timeout: float, mounts: Mapping[Path, str],
            env: Mapping[str, str], network: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a throwaway container of the base image; a time-out kills it."""
    client = docker_client(settings)
    container: Any = None
    try:
        container = client.containers.create(
            settings.base_image, command, working_dir=str(cwd), network_mode=network, detach=True,
            environment={"HOME": "/tmp", "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin", **env},
            volumes={str(path): {"bind": str(path), "mode": mode} for path, mode in mounts.items()},
            user=f"{os.getuid()}:{os.getgid()}", cap_drop=["ALL"], security_opt=["no-new-privileges"],
            nano_cpus=int(CPUS * 1e9), mem_limit=MEMORY, memswap_limit=MEMORY, pids_limit=PIDS,
            labels={LABEL: "1"})
        container.start()
        try:
            status = container.wait(timeout=timeout)
        except (ReadTimeout, RequestsConnectionError) as exc:
            raise OrchestraError(f"{Path(command[0]).name} did not finish within {timeout:.0f}s in the sandbox",
                                 hint="make it faster or raise the stage's time limit") from exc
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        err = container.logs(stdout=False, stderr=True).decode(errors="replace")
        container.reload()
        if container.attrs["State"].get("OOMKilled"):
            err += f"\nsandbox: killed for using more than {MEMORY} of memory\n"
        return subprocess.CompletedProcess(command, int(status["StatusCode"]), out, err)
    except (APIError, DockerException) as exc:
        raise OrchestraError(f"the sandbox could not run {Path(command[0]).name}: {exc}",
                             hint="check the Docker engine (DOCKER_HOST) and the base image") from exc
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except DockerException:
                logger.warning("could not remove sandbox container %s", container.id)
        client.close()


def _pip_mounts(settings: Settings) -> dict[Path, str]:
    """This machine's pip settings and the local files they name (CA bundles, wheel directories), read-only."""
    values = [settings.tool_env.get(k, "") for k in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
                                                     "PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")]
    mounts: dict[Path, str] = {}
    if PIP_CONFIG.is_file():
        mounts[PIP_CONFIG] = "ro"
        config = ConfigParser()
        config.read(PIP_CONFIG)
        values += [v for section in config.sections() for v in config[section].values()]
    for word in (w for value in values for w in value.split()):
        path = Path(word.removeprefix("file://"))
        if path.is_absolute() and path.exists() and not word.startswith(("http://", "https://")):
            mounts[path] = "ro"
    return mounts
