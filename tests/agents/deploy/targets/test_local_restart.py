"""The local target's restart hook (the always-on watch's, past a release's guard period) on a real engine.

A restart that works is tested end to end in tests/agents/observability/test_always_on.py; here, the
container the live state names is gone.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis

from agents.deploy.targets.local import LocalTarget
from agents.deploy.targets.state import LiveState, Release
from orchestra.errors import NotFound
from tests.support.docker_services import DockerEnv

pytestmark = pytest.mark.docker


def test_a_container_that_no_longer_exists_is_not_restarted_and_nothing_is_touched(
        docker_env: DockerEnv, redis: Redis, tmp_path: Path) -> None:
    state = LiveState(service="web", env="staging", edge_port=0, edge_prefix=str(tmp_path / "edge"))
    gone = Release(version="v2", image="registry.example/web:v2", port=1, container="orchestra-web-staging-gone",
                   run_id="r1")
    with docker_env.connected() as client:
        before = sorted((c.name, c.status) for c in client.containers.list(all=True))
        with pytest.raises(NotFound, match="the container orchestra-web-staging-gone was not found on this host"):
            LocalTarget(client, redis, tmp_path).restart(state, gone, "/health")
        assert sorted((c.name, c.status) for c in client.containers.list(all=True)) == before
