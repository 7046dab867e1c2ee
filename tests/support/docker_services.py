"""A real Docker engine and image registry for tests, started from Debian packages and stopped after.

``dockerd`` runs with no bridge network and no iptables rules, on its own unix socket. Its data
root lives in a stable cache directory so the base image (built once with
``scripts/build-base-image``) survives between test sessions. A second test session running at
the same time cannot share that data root: it gets a temporary one and loads the base image from
the tarball the first session saved.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker

from orchestra.settings import PROJECT_ROOT
from tests.support.services import free_port, port_open, wait_for

CACHE_DIR = Path("/var/tmp/orchestra-docker")
BASE_IMAGE = "orchestra-base:bookworm"
BASE_TARBALL = "base-image.tar"
BUILD_SCRIPT = PROJECT_ROOT / "scripts" / "build-base-image"
NODE_IMAGE = "orchestra-node:bookworm"
NODE_TARBALL = "node-image.tar"
NODE_SCRIPT = PROJECT_ROOT / "scripts" / "build-node-base-image"


@contextmanager
def _cache_lock(cache: Path) -> Iterator[bool]:
    """Hold the cache's lock for the session; yields False when another session has it."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _start_dockerd(root: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("dockerd")
    if binary is None:
        raise RuntimeError("dockerd is not installed (apt-get install docker.io)")
    for sub in ("data", "exec"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _stop_orphan(root)
    socket_path = root / "docker.sock"
    socket_path.unlink(missing_ok=True)
    cmd = [binary, "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip6tables=false",
           f"--data-root={root / 'data'}", f"--exec-root={root / 'exec'}",
           f"--pidfile={root / 'dockerd.pid'}", f"-H=unix://{socket_path}"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"unix://{socket_path}"
    wait_for(lambda: docker.DockerClient(base_url=url, version="auto").ping(), timeout=30,
             what=f"dockerd on {socket_path} (log: {log})")
    return proc, url


def _remove_root(root: Path) -> None:
    """Delete a temporary engine root; dockerd leaves its network namespace bind-mounted there."""
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{root}/")]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", point], check=False, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def _stop_orphan(root: Path) -> None:
    """End a dockerd a crashed earlier session left on this data root (we hold its lock now)."""
    pidfile = root / "dockerd.pid"
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return
    if "dockerd" in cmdline and str(root / "data") in cmdline:
        os.kill(pid, 15)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=20, what=f"old dockerd {pid} to stop")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextmanager
def dockerd(root: Path | None = None) -> Iterator[str]:
    """A dockerd of our own; yields its ``unix://`` URL. Uses the cache dir when it is free."""
    with ExitStack() as stack:
        if root is None:
            owned = stack.enter_context(_cache_lock(CACHE_DIR))
            root = CACHE_DIR if owned else Path(tempfile.mkdtemp(prefix="odk-", dir="/var/tmp"))
            if not owned:
                stack.callback(_remove_root, root)
        proc, url = _start_dockerd(root, root / "dockerd.log")
        try:
            yield url
        finally:
            _remove_leftover_containers(url)
            _stop(proc)


def _remove_leftover_containers(url: str) -> None:
    client = docker.DockerClient(base_url=url, version="auto")
    for container in client.containers.list(all=True):
        container.remove(force=True)
    client.close()


def ensure_base_image(docker_url: str, image: str = BASE_IMAGE, *, tarball_name: str = BASE_TARBALL,
                      script: Path = BUILD_SCRIPT) -> str:
    """Make sure ``image`` exists in the engine: load the cached tarball, or build it once."""
    client = docker.DockerClient(base_url=docker_url, version="auto")
    try:
        if client.images.list(name=image):
            return image
        tarball = CACHE_DIR / tarball_name
        if tarball.exists():
            with open(tarball, "rb") as data:
                client.images.load(data)
            if client.images.list(name=image):
                return image
        env = {**os.environ, "DOCKER_HOST": docker_url}
        subprocess.run([str(script), image], check=True, env=env, timeout=900)
        _save_tarball(client, image, tarball)
        return image
    finally:
        client.close()


def _save_tarball(client: docker.DockerClient, image: str, tarball: Path) -> None:
    partial = tarball.with_suffix(".partial")
    with open(partial, "wb") as out:
        for chunk in client.images.get(image).save(named=True):
            out.write(chunk)
    partial.replace(tarball)


@contextmanager
def registry() -> Iterator[str]:
    """Debian's docker-registry on a free loopback port with filesystem storage; yields host:port."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="orchestra-registry-") as tmp:
        config = Path(tmp) / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {tmp}/data\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n")
        with open(Path(tmp) / "registry.log", "wb") as log:
            proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: port_open(port), what=f"docker-registry on port {port}")
            yield f"127.0.0.1:{port}"
        finally:
            _stop(proc, timeout=10)


@dataclass(frozen=True)
class DockerEnv:
    """A running engine (with the base image) and registry."""

    url: str
    registry: str
    base_image: str = BASE_IMAGE

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, version="auto", timeout=300)

    def node_image(self) -> str:
        """The Node base image in this engine, loaded or built on first use (only Node tests pay for it)."""
        return ensure_base_image(self.url, NODE_IMAGE, tarball_name=NODE_TARBALL, script=NODE_SCRIPT)

    @contextmanager
    def connected(self, *, stop_deployed_in: Path | None = None) -> Iterator[docker.DockerClient]:
        """A client, closed afterwards; given a workdir, what deploys under it left live is stopped first."""
        client = self.client()
        try:
            yield client
        finally:
            try:
                if stop_deployed_in is not None:
                    stop_deployed(client, stop_deployed_in)
            finally:
                client.close()


class _Shared:
    """One engine and registry per test process, however many test modules ask for them."""

    def __init__(self) -> None:
        self.stack: ExitStack | None = None
        self.env: DockerEnv | None = None
        self.users = 0

    def acquire(self) -> DockerEnv:
        if self.env is None:
            stack = ExitStack()
            try:
                url = stack.enter_context(dockerd())
                ensure_base_image(url)
                self.env = DockerEnv(url, stack.enter_context(registry()))
            except BaseException:
                stack.close()
                raise
            self.stack = stack
        self.users += 1
        return self.env

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.stack is not None:
            self.stack.close()
            self.stack, self.env = None, None


_SHARED = _Shared()


@contextmanager
def shared_docker() -> Iterator[DockerEnv]:
    """The process-wide engine and registry: started on first use, stopped when the last user is done.

    Use from a session-scoped fixture in each test module that needs it.
    """
    env = _SHARED.acquire()
    try:
        yield env
    finally:
        _SHARED.release()


def stop_deployed(client: docker.DockerClient, workdir: Path) -> None:
    """Stop what deploys under ``workdir`` left live: its nginx edges and the labelled containers."""
    from agents.deploy.targets.docker import LABEL
    from agents.deploy.targets.edge import Edge

    for edge_dir in (workdir / "edge").glob("*"):
        Edge(edge_dir, 0).stop()
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        container.remove(force=True)
