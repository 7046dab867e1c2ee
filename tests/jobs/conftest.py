"""Fixtures for pipeline tests: the demo repository and real worker processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestra.settings import PROJECT_ROOT, Settings


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/shop as a git repository with branches that trip each gate."""
    dest = tmp_path_factory.mktemp("demo") / "shop"
    subprocess.run([str(PROJECT_ROOT / "scripts" / "make-demo-repo"), str(dest)], check=True,
                   capture_output=True)
    return dest


def orchestra_env(settings: Settings) -> dict[str, str]:
    """The environment a child `orchestra` process needs to share this test's Redis and directories."""
    policy = {"ORCHESTRA_POLICY_FILE": str(settings.policy_file)} if settings.policy_file else {}
    return {**settings.tool_env, "PATH": f"{Path(sys.executable).parent}:{settings.tool_env.get('PATH', '')}",
            "REDIS_URL": settings.redis_url, "ORCHESTRA_WORKDIR": str(settings.workdir),
            "ORCHESTRA_CACHE_DIR": str(settings.cache), "ORCHESTRA_SANDBOX": settings.sandbox, **policy}


@pytest.fixture
def start_worker(settings: Settings) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `orchestra worker` processes (each its own process group); all are stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, settings: Settings = settings) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", *args], env=orchestra_env(settings),
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
