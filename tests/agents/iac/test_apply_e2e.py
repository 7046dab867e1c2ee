"""The issue's end-to-end transcript: the shop on ECS gets Terraform generated and planned, the run parks for an
approval even in staging (which asks for none), the requester's own click is refused, another person approves
in the thread, the saved plan is applied against a real moto_server, the resources are there for boto3, the
outputs reach iac_ready, the run and the ECS deploy target's settings, a second deploy plans again (only what
moto does not keep), two releases go through the ECS deploy target with only the outputs to find the cluster and
the listener (staging's own settings point elsewhere), and the test destroys what was made. A real worker process
and the router in this process run the iac stages; the deploy stage runs in this process, and
tests/support/moto.py's Ecs plays the ECS agent (moto runs no tasks)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.deploy import stage as deploy_stage
from agents.deploy.targets.registry import Targets
from agents.deploy.targets.state import get_live
from jobs import approvals
from jobs.dispatch import dispatch
from jobs.graph import IAC, IAC_APPLY, Graph
from jobs.router import Router
from orchestra.config import load_config
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Run, RunStatus, RunStore
from tests.jobs.conftest import orchestra_env
from tests.support.moto import CREDENTIALS, REGION, Ecs, aws_env, session
from tests.support.services import wait_for

pytestmark = pytest.mark.slow
GRAPH = Graph((IAC, IAC_APPLY))


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """examples/shop with its services on ECS, as a git repository on main."""
    repo = tmp_path / "shop"
    shutil.copytree(PROJECT_ROOT / "examples" / "shop", repo)
    config = repo / "devops_orchestra.yaml"
    config.write_text(config.read_text().replace("runtime: docker", "runtime: ecs"))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "the shop on ECS")
    return repo


@pytest.fixture
def pipeline(redis: Redis, settings: Settings, provider_mirror: Path, moto: str) -> Iterator[Settings]:
    """A real worker process with the AWS environment a worker would have, and the router on GRAPH."""
    settings = settings.with_(terraform_mirror=provider_mirror, terraform_cli_config=None)
    env = {**orchestra_env(settings), "ORCHESTRA_TERRAFORM_MIRROR": str(provider_mirror),
           "AWS_ENDPOINT_URL": moto, "AWS_DEFAULT_REGION": REGION, **CREDENTIALS}
    worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--no-router"], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    router = threading.Thread(target=Router(redis, settings, graph=GRAPH, name="test-router").run, args=(stop,),
                              daemon=True)
    router.start()
    yield settings
    stop.set()
    router.join(timeout=10)
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def deploy(redis: Redis, settings: Settings, repo: Path) -> str:
    intent = Intent(kind=IntentKind.DEPLOY, env="staging", user="U0ALICE", source="slack")
    return dispatch(intent, redis=redis, settings=settings, repo=repo, graph=GRAPH).id


def settles(redis: Redis, run_id: str, *statuses: RunStatus, timeout: float) -> RunStatus:
    wait_for(lambda: RunStore(redis).get(run_id).status in statuses, timeout=timeout, interval=0.2,
             what=f"run {run_id} to become {', '.join(s.value for s in statuses)}")
    return RunStore(redis).get(run_id).status


NOWHERE = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/elsewhere/0123456789abcdef/0123456789"
ELSEWHERE = f"""    ecs:
      cluster: elsewhere
      listener: {NOWHERE}
      subnets: [subnet-0e15e0e15e0e15e0e]
      security_groups: [sg-0e15e0e15e0e15e0e]
      execution_role: arn:aws:iam::123456789012:role/elsewhere
      rollout_timeout: 30s
"""


def forwards(elb: Any, listener: str, groups: dict[str, str]) -> dict[str, dict[str, int]]:
    """Service -> {target group name: weight} of the listener's forward action naming its two colours."""
    names = {arn: name for name, arn in groups.items()}
    found: dict[str, dict[str, int]] = {}
    for rule in elb.describe_rules(ListenerArn=listener)["Rules"]:
        action = rule["Actions"][0]
        weighted = (action.get("ForwardConfig") or {}).get("TargetGroups") or \
            [{"TargetGroupArn": action["TargetGroupArn"], "Weight": 100}]
        weights = {names[g["TargetGroupArn"]]: g["Weight"] for g in weighted}
        found[next(iter(weights)).rsplit("-", 1)[0]] = weights
    return found


def ship(redis: Redis, settings: Settings, repo: Path, moto: str, outputs: dict[str, Any]) -> None:
    """v1 then v2 of the shop through the ECS deploy stage, with staging's settings pointing elsewhere; moto's
    ECS services then run v2 in the output cluster and the output listener forwards all to green."""
    config = repo / "devops_orchestra.yaml"
    staging = "    demo_traffic: {rps: 5}\n"
    config.write_text(config.read_text().replace(staging, staging + ELSEWHERE))
    elsewhere = load_config(repo).environment("staging").ecs
    assert elsewhere is not None and (elsewhere.cluster, elsewhere.listener) == ("elsewhere", NOWHERE)
    ecs, elb = session(moto).client("ecs", endpoint_url=moto), session(moto).client("elbv2", endpoint_url=moto)
    groups = outputs["ecs_target_groups"]
    serving = {service: [name for name, weight in weights.items() if weight]
               for service, weights in forwards(elb, outputs["ecs_listener"], groups).items()}
    assert serving == {"backend": ["backend-blue"], "frontend": ["frontend-blue"]}  # as Terraform made it
    images = {v: {s: {"image": f"registry.example/shop-{s}:{v}", "version": v} for s in ("backend", "frontend")}
              for v in ("v1", "v2")}
    agent = Ecs(moto, outputs["ecs_cluster"]).start()  # plays the ECS agent: healthy targets for wanted tasks
    started = time.monotonic()
    try:
        with aws_env(moto):
            for version in ("v1", "v2"):
                run = Run(requested_by="U0ALICE", repo=str(repo), services=["backend", "frontend"], env="staging")
                ctx = AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                                   config=load_config(repo), actor="deploy")
                result = deploy_stage.run(ctx, images=images[version])
                assert result.passed, result.summary
    finally:
        agent.stop()
    print(f"ECS deploys v1 and v2: {time.monotonic() - started:.1f}s")
    assert ecs.describe_clusters(clusters=["elsewhere"])["clusters"] == []
    for service in ("backend", "frontend"):
        found = ecs.describe_services(cluster=outputs["ecs_cluster"], services=[f"{service}-staging-green"])
        green = found["services"][0]
        assert (green["status"], green["desiredCount"]) == ("ACTIVE", 1)
        assert green["loadBalancers"][0]["targetGroupArn"] == groups[f"{service}-green"]
        task = ecs.describe_task_definition(taskDefinition=green["taskDefinition"])["taskDefinition"]
        assert task["containerDefinitions"][0]["image"] == images["v2"][service]["image"]
        assert task["executionRoleArn"] == outputs["ecs_execution_role"]
        live = get_live(redis, service, "staging")
        assert live is not None and live.url == outputs["url"] and live.weights == {"v2": 100}
    assert forwards(elb, outputs["ecs_listener"], groups) == {
        "backend": {"backend-blue": 0, "backend-green": 100}, "frontend": {"frontend-blue": 0, "frontend-green": 100}}


def test_the_shop_on_ecs_is_planned_approved_in_the_thread_applied_against_moto_and_planned_again(
        redis: Redis, repo: Path, pipeline: Settings, moto: str) -> None:
    settings, bus = pipeline, EventBus(redis)
    run_id = deploy(redis, settings, repo)
    assert settles(redis, run_id, RunStatus.AWAITING_APPROVAL, RunStatus.FAILED, RunStatus.SUCCEEDED,
                   timeout=120) == RunStatus.AWAITING_APPROVAL, RunStore(redis).get(run_id).reason
    run = RunStore(redis).get(run_id)
    assert run.stage == "iac_apply" and run.iac_plan and run.iac_plan["changes"]
    asked = next(e for e in bus.replay(run_id) if e.type == EventType.APPROVAL_REQUESTED)
    assert asked.data["stage"] == "iac_apply" and "37 to add, 0 to change, 0 to destroy" in asked.data["message"]
    assert "aws_ecs_service ×4" in asked.data["message"] and run.iac_plan["sha256"][:12] in asked.data["message"]
    ecs = session(moto).client("ecs", endpoint_url=moto)
    assert ecs.list_clusters()["clusterArns"] == []  # nothing before the approval

    mine = approvals.decide(run_id, user="U0ALICE", approve=True, redis=redis, settings=settings)
    assert not mine.accepted and "your own request" in mine.message
    assert approvals.decide(run_id, user="U0BOB", approve=True, redis=redis, settings=settings).accepted
    assert settles(redis, run_id, RunStatus.SUCCEEDED, RunStatus.FAILED, timeout=400) == RunStatus.SUCCEEDED, \
        RunStore(redis).get(run_id).reason

    ready = [e for e in bus.replay(run_id) if e.type == EventType.IAC_READY]
    assert [e.data["stage"] for e in ready] == ["iac", "iac_apply"]
    applied = ready[-1].data
    assert applied["applied"] and "applied the approved plan for shop/staging: 37 to add" in applied["summary"]
    outputs = applied["outputs"]
    assert outputs["ecs_cluster"] == "shop-staging" and RunStore(redis).get(run_id).iac_outputs == outputs
    assert sorted(outputs["ecs_target_groups"]) == ["backend-blue", "backend-green", "frontend-blue", "frontend-green"]
    elb = session(moto).client("elbv2", endpoint_url=moto)
    groups = {g["TargetGroupName"]: g["TargetGroupArn"] for g in elb.describe_target_groups()["TargetGroups"]}
    assert {name: groups[name] for name in outputs["ecs_target_groups"]} == outputs["ecs_target_groups"]
    assert elb.describe_listeners(ListenerArns=[outputs["ecs_listener"]])["Listeners"]
    services = ecs.list_services(cluster="shop-staging")["serviceArns"]
    assert len(services) == 4
    with aws_env(moto):  # the shop names no ECS settings for staging: the deploy target takes what was applied
        target = Targets(settings, redis, load_config(repo), "staging")._make("ecs")
    assert (target.settings.cluster, target.settings.listener) == ("shop-staging", outputs["ecs_listener"])
    assert target.settings.subnets == outputs["ecs_subnets"] and target.settings.execution_role.endswith("execution")

    # Planned again: against AWS this plan is empty. moto keeps neither an ECS service's health-check grace
    # period nor an Elastic IP's tags, so it shows those five in-place changes and nothing else; a plan that
    # changes something parks again, and a rejection applies nothing. (tests/agents/iac/test_apply_router.py
    # has the empty plan passing without an approval.)
    again = deploy(redis, settings, repo)
    assert settles(redis, again, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.AWAITING_APPROVAL,
                   timeout=120) == RunStatus.AWAITING_APPROVAL, RunStore(redis).get(again).reason
    replanned = RunStore(redis).get(again).iac_plan or {}
    assert replanned["summary"] == "0 to add, 5 to change, 0 to destroy"
    assert replanned["by_type"] == "change: aws_ecs_service ×4, aws_eip ×1"
    assert approvals.decide(again, user="U0BOB", approve=False, redis=redis, settings=settings).accepted
    assert settles(redis, again, RunStatus.REJECTED, RunStatus.FAILED, timeout=30) == RunStatus.REJECTED
    assert not any(e.data.get("stage") == "iac_apply" for e in bus.replay(again) if e.type == EventType.IAC_READY)

    # Deployed through the ECS target with only what the apply made: staging's `ecs:` settings now name another
    # cluster, listener, network and role (none of which exist), so only the outputs can take the release there.
    ship(redis, settings, repo, moto, outputs)

    folder = settings.run_dir(run_id) / "infrastructure"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(folder), "CHECKPOINT_DISABLE": "1",
           "TF_CLI_CONFIG_FILE": str(folder / "terraform.rc"), "AWS_DEFAULT_REGION": REGION, **CREDENTIALS,
           "TF_PLUGIN_CACHE_DIR": str(settings.cache / "terraform-plugins"), "TF_VAR_aws_endpoint": moto}
    started = time.monotonic()
    subprocess.run(["terraform", "destroy", "-auto-approve", "-input=false", "-no-color"], cwd=folder / "generated",
                   env=env, capture_output=True, text=True, timeout=300, check=True)
    print(f"destroy: {time.monotonic() - started:.1f}s; apply: {applied['apply_s']}s")
    clusters = ecs.describe_clusters(clusters=["shop-staging"])["clusters"]
    assert not [c for c in clusters if c["status"] == "ACTIVE"]
    assert not elb.describe_target_groups()["TargetGroups"] and not elb.describe_load_balancers()["LoadBalancers"]
