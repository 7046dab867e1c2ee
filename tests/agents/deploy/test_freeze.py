"""A freeze is checked again when traffic would move, not only when the run was requested."""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from redis import Redis

from agents.context import AgentContext
from agents.deploy import stage as deploy
from agents.deploy.strategies import TrafficStep
from agents.deploy.targets.state import get_live
from orchestra.config import load_config
from orchestra.events import EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Run

CONFIG = """\
project: {{name: shop}}
deployment:
  services:
    - {{name: web, path: web, port: 8000}}
environments:
  staging:
    freeze:
      - {{start: "{start}", end: "{end}", reason: release train}}
"""


def _ctx(tmp_path: Path, settings: Settings, redis: Redis, *, starts_in: float) -> AgentContext:
    (tmp_path / "web").mkdir(exist_ok=True)
    now = datetime.now(UTC)
    (tmp_path / "devops_orchestra.yaml").write_text(CONFIG.format(
        start=(now + timedelta(seconds=starts_in)).isoformat(), end=(now + timedelta(hours=1)).isoformat()))
    run = Run(requested_by="U0ALICE", repo=str(tmp_path), services=["web"], env="staging", strategy="canary")
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=tmp_path,
                        config=load_config(tmp_path), actor="deploy")


def test_a_freeze_in_force_when_the_deploy_stage_starts_deploys_nothing(tmp_path: Path, settings: Settings,
                                                                        redis: Redis) -> None:
    ctx = _ctx(tmp_path, settings, redis, starts_in=-60)
    result = deploy.run(ctx, images={"web": {"image": "127.0.0.1:9/shop/web:v2", "version": "v2"}})
    assert not result.passed
    assert result.summary.startswith("staging is frozen now (") and "release train" in result.summary
    assert result.data["hint"] == deploy.FROZEN_HINT and result.data["deployed"] == []
    assert get_live(redis, "web", "staging") is None  # no target was even opened


def test_a_freeze_that_begins_during_a_canary_fails_the_next_step(tmp_path: Path, settings: Settings,
                                                                  redis: Redis) -> None:
    ctx = _ctx(tmp_path, settings, redis, starts_in=1.5)
    asked: list[int] = []

    def metrics_judge(step: TrafficStep) -> str:
        asked.append(step.step)
        return "pass"

    judge = deploy._stopped_by_freeze(ctx, metrics_judge)
    assert judge is not None
    step = TrafficStep("web", "staging", None, None, 1, 10, 0.0)  # type: ignore[arg-type]
    assert judge(step) == "pass" and asked == [1]
    time.sleep(2)
    assert judge(step) == "fail" and asked == [1]  # the metrics are not even asked
    [denied] = [e for e in EventBus(redis).replay(ctx.run.id) if e.type == EventType.POLICY_DENIED]
    assert "staging is frozen now" in denied.data["summary"] and "traffic goes back" in denied.data["summary"]
