"""The original description's devops_orchestra.yaml template: exactly which of its fields are refused, and
that every other field is accepted and changes what the stages do (tests/fixtures/config/original_template.yaml)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from redis import Redis

from agents.build import services_of
from agents.context import AgentContext
from agents.deploy.stage import plan_for
from agents.observability.live import deploy_judge
from agents.observability.policy import policy_from_config
from agents.testing.stage import pytest_args
from cli.validate import main as validate
from orchestra.config import CONFIG_FILENAME, load_config
from orchestra.events import EventBus
from orchestra.settings import Settings
from orchestra.store import Run

TEMPLATE = Path(__file__).parents[2] / "fixtures" / "config" / "original_template.yaml"
REFUSED = [
    "12: project.repo: not supported yet: project.repo = https://github.com/user/my-app; nothing reads it: the "
    "repository deployed is the one this file is read from (the GitHub push's, or one of the bot's "
    "ORCHESTRA_REPOS); remove project.repo",
    "28: deployment.type: not supported yet: deployment.type = cloud; supported: local or on-premise (where a "
    "service runs is its `runtime`: docker, kubernetes, ecs, ec2 or lambda, with the environment's "
    "kubernetes/ecs/ec2/lambda settings)",
    "29: deployment.provider: not supported yet: deployment.provider = aws; supported: local (where a service "
    "runs is its `runtime`: docker, kubernetes, ecs, ec2 or lambda, with the environment's "
    "kubernetes/ecs/ec2/lambda settings)",
    "65: observability.tools: not supported yet: observability.tools = grafana, cloudwatch; supported: "
    "prometheus (scrapes each service for the canary judge and the watch; [] for none)",
    "80: chatops.notify_on: not supported yet: chatops.notify_on without deployment_started, "
    "approval_requested, analysis_failure, test_failure, build_failure; every stage of a run is posted in its "
    "Slack thread; supported: every event (remove notify_on; chatops.enabled: false keeps runs not asked for in "
    "Slack out of the channel)",
]
# What a user writes after reading those lines: each refused field removed or given what is supported.
FIXES = [("  repo: https://github.com/user/my-app\n", ""), ("  type: cloud", "  type: on-premise"),
         ("  provider: aws", "  provider: local"),
         ("    - grafana\n    - cloudwatch\n", ""),
         ("  notify_on:\n    - deployment_success\n    - deployment_failure\n    - rollback_triggered\n", "")]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "my-app"
    repo.mkdir()
    shutil.copy(TEMPLATE, repo / CONFIG_FILENAME)
    return repo


def test_orchestra_validate_refuses_exactly_these_fields_of_the_template(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert validate([str(repo)]) == 1
    out, err = capsys.readouterr()
    assert [line.removeprefix(f"{repo / CONFIG_FILENAME}:") for line in out.splitlines()] == REFUSED
    assert "5 problem(s)" in err


def test_with_the_refused_fields_fixed_every_other_field_acts(repo: Path, settings: Settings, redis: Redis,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    text = (repo / CONFIG_FILENAME).read_text()
    for old, new in FIXES:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (repo / CONFIG_FILENAME).write_text(text)
    assert validate([str(repo)]) == 0, capsys.readouterr().out
    config = load_config(repo)
    run = Run(requested_by="U0ALICE", repo=str(repo), services=[], env="staging")
    ctx = AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                       config=config, actor="test")

    # build: docker, context . (the service's folder), Dockerfile (./Dockerfile, else one is generated)
    [spec] = services_of(ctx)
    assert (spec.name, spec.path, spec.port, spec.dockerfile) == ("api-server", repo, 5000, None)
    # testing: enabled, pytest, `pytest tests/` -> pytest's own arguments
    assert config.testing.enabled and pytest_args(config.testing) == ["tests/"]
    # deployment: strategy, the service's port and env
    plan = plan_for(ctx, "api-server", {"image": "r/my-app-api-server:abc", "version": "abc"}, None)
    assert (plan.strategy, plan.port_hint, plan.metrics_path) == ("blue-green", 5000, "/metrics")
    assert plan.extra_env == {"ENV": "production", "DB_URL": "postgres://..."}
    # rollback thresholds (errors: 5 is error_rate 5%) and observability alerts -> the judge's policy
    policy = policy_from_config(config)
    limits = policy.limits()
    assert (limits["error_rate"], limits["cpu"], policy.breach_s, policy.enabled) == (0.05, 90.0, 300.0, True)
    assert policy.alerts == {"latency_p99": 0.5, "error_rate": 0.02}
    # observability: enabled with prometheus -> the canary judge during the deploy
    assert deploy_judge(ctx) is not None
    # infrastructure, secrets, chatops: what the iac stage, the deploy's secret resolution and the dispatcher
    # read (their effect: tests/agents/iac/test_stage.py, tests/agents/deploy/targets/test_secrets.py,
    # tests/bot/slack/test_relay.py)
    assert (config.infrastructure.tool, config.infrastructure.path) == ("terraform", "infra/")
    assert (config.secrets.manager, config.secrets.keys) == ("aws_secrets_manager", ["DB_PASSWORD", "API_KEY"])
    assert (config.chatops.enabled, config.chatops.channel) == (True, "#devops-orchestra")
    assert (config.project.name, config.project.language, config.project.framework) == ("my-app", "python",
                                                                                         "flask")

