"""End to end with the Docker engine: from `/deploy` in Slack to a live service, approvals included.

    alice: /deploy frontend hotfix-v2 prod
    orchestra: ✋ Deploy frontend `hotfix-v2` → production · waiting for approval
        ↳ ✅ Code analysis … ↳ ✅ Tests … ↳ ✅ Build …
        ↳ ✋ Approval needed before `deploy` … [Approve] [Reject]
    alice presses Approve → (only alice) you cannot approve your own request
    bob presses Approve   → ↳ ✅ Approved by @bob. ↳ 🚢 Deploying frontend `3f9c2ab` (hotfix-v2) (canary) …
                            ↳ ✅ Deployed … ↳ ✅ Run succeeded
"""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from agents.observability.live import targets_path
from bot.localslack.client import WorkspaceClient
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import RunStore
from tests.support.docker_services import DockerEnv
from tests.support.prometheus import prometheus_server
from tests.support.services import wait_for
from tests.support.slack_workspace import bot_process, local_slack, orchestra_process, process_env, thread_of

pytestmark = [pytest.mark.slow, pytest.mark.docker]
FINISHED = (":white_check_mark: Run", ":x: Run", ":no_entry_sign: Run", ":octagonal_sign: Run")


def _demo_repo(root: Path) -> Path:
    """The demo shop with a hotfix-v2 branch, no Friday-evening freeze (the test may run then), a short watch."""
    repo = root / "shop"
    subprocess.run([str(PROJECT_ROOT / "scripts" / "make-demo-repo"), str(repo)], check=True, capture_output=True)
    config = repo / "devops_orchestra.yaml"
    lines = config.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "freeze:")
    text = "\n".join(lines[:start] + lines[start + 6:]) + "\n"
    config.write_text(text.replace("watch: 30s", "watch: 8s"))  # the observe stage's watch window
    for args in (["commit", "-qam", "No freeze for the test"], ["checkout", "-q", "-B", "hotfix-v2", "main"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    app = repo / "frontend" / "app.py"  # the release is a code change (medium risk: each environment's own
    app.write_text(app.read_text() + "# the release\n")  # path), not the configuration change (high risk)
    for args in (["commit", "-qam", "The release"], ["checkout", "-q", "main"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    return repo


@pytest.fixture(scope="module")
def world(redis_url: str, docker_env: DockerEnv,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkspaceClient, Redis]]:
    root = tmp_path_factory.mktemp("transcript-deploy")
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    settings = Settings(redis_url=redis_url, workdir=root / "work", repos=(str(_demo_repo(root)),))
    with docker_env.connected(stop_deployed_in=settings.workdir), local_slack() as (running, slack), \
            prometheus_server(targets_file=targets_path(settings.workdir)) as prom:
        env = process_env(settings, running.api_url, ORCHESTRA_CACHE_DIR=str(root / "cache"),
                          ORCHESTRA_PROMETHEUS_URL=prom.url,
                          DOCKER_HOST=docker_env.url, ORCHESTRA_REGISTRY=docker_env.registry,
                          ORCHESTRA_BASE_IMAGE=docker_env.base_image,
                          ORCHESTRA_BUILD_CA_BUNDLE="/etc/ssl/certs/ca-certificates.crt")
        with bot_process(settings, slack, running.api_url, root / "bot.log"), \
                orchestra_process(["worker"], env, root / "worker.log"):
            yield slack, redis
    redis.close()


def _replies(slack: WorkspaceClient, run_id: str) -> list[dict[str, Any]]:
    return list((thread_of(slack, run_id) or {}).get("replies", []))


def _run_id(slack: WorkspaceClient, redis: Redis, command: str, user: str) -> str:
    known = {r.id for r in RunStore(redis).recent(50)}
    assert slack.command(command, user=user)["acked"]
    return str(wait_for(lambda: next((r.id for r in RunStore(redis).recent(5) if r.id not in known), None),
                        what="the run"))


def _finished(slack: WorkspaceClient, run_id: str, timeout: float = 600) -> list[str]:
    texts: Any = wait_for(lambda: [r["text"] for r in _replies(slack, run_id)]
                          if any(r["text"].startswith(FINISHED) for r in _replies(slack, run_id)) else None,
                          timeout=timeout, interval=0.5, what=f"run {run_id} finishing")
    return list(texts)


def test_production_deploy_waits_for_another_persons_approval(world: tuple[WorkspaceClient, Redis]) -> None:
    slack, redis = world
    # frontend needs backend, which is not running in production yet: production deploys only what is named
    run_id = _run_id(slack, redis, "/deploy frontend and backend hotfix-v2 prod", "U0ALICE")
    ask: Any = wait_for(lambda: [r for r in _replies(slack, run_id) if r["buttons"]], timeout=600, interval=0.5,
                        what="the approval request")
    assert [b["text"] for b in ask[0]["buttons"]] == ["Approve", "Reject"]
    assert "waiting for approval" in wait_for(lambda: (thread_of(slack, run_id) or {}).get("text", "")
                                              if "approval" in (thread_of(slack, run_id) or {}).get("text", "")
                                              else None, what="the parent saying so")
    slack.click(ask[0]["ts"], "Approve", user="U0ALICE")
    wait_for(lambda: any("cannot approve your own request" in m["text"]
                         for m in _replies(slack, run_id) if m["ephemeral_to"] == "U0ALICE"), what="refusal")
    slack.click(ask[0]["ts"], "Approve", user="U0BOB")
    replies = _finished(slack, run_id)
    assert ":white_check_mark: Approved by <@U0BOB>." in replies
    assert replies[-1].startswith(":white_check_mark: Run succeeded"), replies
    sha = (RunStore(redis).get(run_id).commit or "")[:7]
    assert any(r.startswith(f":ship: Deploying frontend `{sha}` (hotfix-v2) (canary)") for r in replies), replies
    assert any(r.startswith(":white_check_mark: Deployed") for r in replies), replies
    # The parent message is edited at most once a second: it catches up with the last reply.
    wait_for(lambda: "→ *production* · succeeded" in (thread_of(slack, run_id) or {}).get("text", ""),
             timeout=10, what="the parent message saying succeeded")


def test_a_staging_deploy_needs_no_approval(world: tuple[WorkspaceClient, Redis]) -> None:
    slack, redis = world
    run_id = _run_id(slack, redis, "/deploy backend hotfix-v2", "U0CAROL")
    replies = _finished(slack, run_id)
    assert replies[-1].startswith(":white_check_mark: Run succeeded"), replies
    sha = (RunStore(redis).get(run_id).commit or "")[:7]  # the version is the commit, the ref goes beside it
    assert any(r.startswith(f":ship: Deploying backend `{sha}` (hotfix-v2)") for r in replies), replies
    assert not any(r["buttons"] for r in _replies(slack, run_id))


