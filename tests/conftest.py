"""Session-wide fixtures: a real redis-server (with a generated password), an empty database per test, settings."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from orchestra.settings import Settings
from tests.support.docker_services import DockerEnv, shared_docker
from tests.support.services import redis_server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    """An empty Redis database for this test."""
    client = Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Virtualenvs and clones, shared by the whole session (building them is the slow part)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def settings(redis_url: str, tmp_path: Path, cache_dir: Path) -> Settings:
    """This machine's settings (tool environment included), on the test's Redis and directories.

    Services' code runs on this host here (``sandbox="none"``): the sandbox's own tests
    (tests/agents/testing/test_sandbox.py) switch it on with a Docker engine.
    """
    return Settings.from_env().with_(redis_url=redis_url, workdir=tmp_path / "work", cache_dir=cache_dir,
                                     slack_bot_token=None, slack_app_token=None, llm_api_key=None, llm_url=None,
                                     github_token=None, sandbox="none")


@pytest.fixture(scope="session")
def docker_env() -> Iterator[DockerEnv]:
    """A real Docker engine (with the base image) and registry, shared by every test that asks."""
    with shared_docker() as env:
        yield env
