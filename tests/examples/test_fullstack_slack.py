"""examples/fullstack deployed from Slack as the shop is: `/deploy web` in the local workspace, through the
real bot, worker, Docker engine, registry, nginx and Prometheus; the thread ends in success and the live
page's server answers with what the live API serves (web depends on api, which goes live first)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from agents.deploy.targets.state import get_live
from agents.observability.live import targets_path
from bot.localslack.client import WorkspaceClient
from orchestra.settings import Settings
from tests.bot.slack.test_transcript_deploy import _finished, _replies, _run_id
from tests.examples.test_fullstack import _fullstack_repo, get
from tests.support.docker_services import DockerEnv
from tests.support.prometheus import prometheus_server
from tests.support.slack_workspace import bot_process, local_slack, orchestra_process, process_env

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture
def world(redis_url: str, docker_env: DockerEnv, tmp_path: Path) -> Iterator[tuple[WorkspaceClient, Redis]]:
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    repo = _fullstack_repo(tmp_path / "fullstack")
    settings = Settings(redis_url=redis_url, workdir=tmp_path / "work", repos=(str(repo),))
    node_image = docker_env.node_image()
    with docker_env.connected(stop_deployed_in=settings.workdir), local_slack() as (running, slack), \
            prometheus_server(targets_file=targets_path(settings.workdir)) as prom:
        env = process_env(settings, running.api_url, ORCHESTRA_CACHE_DIR=str(tmp_path / "cache"),
                          ORCHESTRA_PROMETHEUS_URL=prom.url, DOCKER_HOST=docker_env.url,
                          ORCHESTRA_REGISTRY=docker_env.registry, ORCHESTRA_BASE_IMAGE=docker_env.base_image,
                          ORCHESTRA_NODE_BASE_IMAGE=node_image,
                          ORCHESTRA_BUILD_CA_BUNDLE="/etc/ssl/certs/ca-certificates.crt")
        with bot_process(settings, slack, running.api_url, tmp_path / "bot.log"), \
                orchestra_process(["worker"], env, tmp_path / "worker.log"):
            yield slack, redis
    redis.close()


def test_deploying_the_fullstack_example_from_slack(world: tuple[WorkspaceClient, Redis]) -> None:
    slack, redis = world
    run_id = _run_id(slack, redis, "/deploy web staging", "U0CAROL")
    replies = _finished(slack, run_id, timeout=900)
    assert replies[-1].startswith(":white_check_mark: Run succeeded"), replies
    assert any(r.startswith(":ship: Deploying") and "api" in r for r in replies), replies  # its dependency first
    assert not any(r["buttons"] for r in _replies(slack, run_id))  # staging asks for no approval
    web, api = get_live(redis, "web", "staging"), get_live(redis, "api", "staging")
    assert web is not None and api is not None
    status, body = get(f"{web.url}/api/books")
    assert status == 200 and json.loads(body) == json.loads(get(f"{api.url}/api/books")[1])
    status, page = get(f"{web.url}/")
    assert status == 200 and '<div id="root">' in page
