"""The scheduled drift check: `infrastructure.drift_check` acts (a timer for the served repository that
asks, fired by the router's tick) or is refused below its minimum; a scheduled look is quiet while nothing drifted
and starts a drift run, whose thread says so in the channel, once a resource changed outside Terraform (real
terraform, moto_server, boto3)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis import Redis

from agents.iac import drift
from jobs import drift_check, timers
from jobs.dispatch import dispatch
from jobs.graph import PIPELINE
from jobs.queue import stage_queue
from orchestra.config.loader import parse_config
from orchestra.errors import ConfigError
from orchestra.events import EVENTS_STREAM
from orchestra.intents import Intent, IntentKind
from orchestra.settings import Settings
from orchestra.store import RunStore
from tests.agents.iac import test_drift
from tests.agents.iac.test_drift import CONFIG, Infra, _group
from tests.support.moto import session

infra = test_drift.infra  # the fixture: the test Terraform, its state and the module's moto_server

HOURLY = CONFIG.replace("path: infra}", "path: infra, drift_check: 1h}")


def test_drift_check_acts_from_fifteen_minutes_and_is_refused_below() -> None:
    assert parse_config(HOURLY, filename="devops_orchestra.yaml").infrastructure.drift_check == 3600
    assert parse_config(CONFIG, filename="devops_orchestra.yaml").infrastructure.drift_check is None
    with pytest.raises(ConfigError) as refused:
        parse_config(CONFIG.replace("path: infra}", "path: infra, drift_check: 5m}"), filename="devops_orchestra.yaml")
    said = str(refused.value)
    assert "infrastructure.drift_check = 300s is too often" in said and "write 15m or more (e.g. 6h)" in said


def test_a_run_of_a_repository_that_asks_for_drift_checks_gives_it_one_timer_that_the_tick_fires(
        tmp_path: Path, redis: Redis, settings: Settings) -> None:
    asks, quiet = tmp_path / "asks", tmp_path / "quiet"
    for repo, config in ((asks, HOURLY), (quiet, CONFIG)):
        (repo / "web").mkdir(parents=True)
        (repo / "devops_orchestra.yaml").write_text(config)
        for _ in range(2):  # a second run does not add a second timer
            dispatch(Intent(kind=IntentKind.DRIFT, env="staging", user="U0ALICE", source="slack"), redis=redis,
                     settings=settings.with_(repos=(str(repo),)), repo=repo)
    queue = stage_queue(redis)
    fired = [m for m in timers.fire_due(redis, queue, PIPELINE) if m.startswith(timers.DRIFT_CHECK)]
    assert fired == [f"drift-check:{asks}"]
    jobs = [j for j in (queue.fetch_job(i) for i in queue.job_ids) if j is not None and j.meta.get("check")]
    assert [(j.func_name, j.args) for j in jobs] == [("jobs.tasks.drift_check", [str(asks)])]
    assert [m for m in timers.fire_due(redis, queue, PIPELINE) if m.startswith(timers.DRIFT_CHECK)] == []  # leased


def test_a_configuration_that_no_longer_asks_ends_the_timer_without_running_terraform(
        tmp_path: Path, redis: Redis, settings: Settings) -> None:
    repo = tmp_path / "shop"
    (repo / "web").mkdir(parents=True)
    (repo / "devops_orchestra.yaml").write_text(CONFIG)
    assert drift_check.look(redis, settings.with_(repos=(str(repo),)), str(repo)) is None
    assert RunStore(redis).recent() == [] and redis.xlen(EVENTS_STREAM) == 0


@pytest.mark.slow
def test_a_scheduled_look_is_quiet_until_something_drifts_then_starts_a_drift_run(infra: Infra, redis: Redis) -> None:
    (infra.repo / "devops_orchestra.yaml").write_text(HOURLY)
    settings = infra.settings.with_(repos=(str(infra.repo),))
    assert drift_check.look(redis, settings, str(infra.repo)) == 3600  # no state yet: nothing to say
    infra.apply()
    assert drift_check.look(redis, settings, str(infra.repo)) == 3600  # no drift: nothing to say
    assert RunStore(redis).recent() == [] and redis.xlen(EVENTS_STREAM) == 0  # the looks publish nothing

    ec2 = session(infra.moto).client("ec2", endpoint_url=infra.moto)
    ec2.create_tags(Resources=[_group(infra.moto)["GroupId"]], Tags=[{"Key": "team", "Value": "someone-else"}])
    assert drift_check.look(redis, settings, str(infra.repo)) == 3600
    [run] = RunStore(redis).recent()
    assert (run.kind, run.env, run.requested_by, run.source) == ("drift", "staging", "orchestra:drift-check",
                                                                  "schedule")
    streamed = {json.loads(fields[b"event"])["run_id"] for _, fields in redis.xrange(EVENTS_STREAM)}
    assert streamed == {run.id}  # only the run that says so in the channel
    assert not (settings.workdir / "runs").exists() or [p.name for p in (settings.workdir / "runs").iterdir()] == []


def test_which_environments_have_a_state_of_their_own(tmp_path: Path) -> None:
    repo = tmp_path / "shop"
    (repo / "infra").mkdir(parents=True)
    s3 = CONFIG.replace("path: infra}", "path: infra, backend: {s3: {bucket: tf-state, region: us-east-1, "
                                        "dynamodb_table: tf-locks}}}")
    generated = CONFIG.replace("runtime: docker", "runtime: ecs")
    parse = lambda text: parse_config(text, filename="devops_orchestra.yaml")  # noqa: E731
    assert drift.state_per_environment(repo, parse(generated))  # no files: generated, one local state per env
    (repo / "infra" / "main.tf").write_text('variable "x" {}\n')
    assert not drift.state_per_environment(repo, parse(CONFIG))  # the repository's own backend: one state
    assert drift.state_per_environment(repo, parse(s3))  # S3: one key per environment


def test_a_look_without_time_left_gives_each_environment_a_drift_run_of_its_own(
        tmp_path: Path, redis: Redis, settings: Settings) -> None:
    """A slow cloud cannot make a look outlive its job: what it has no time for is looked at by a run."""
    repo = tmp_path / "shop"
    (repo / "web").mkdir(parents=True)
    (repo / "devops_orchestra.yaml").write_text(HOURLY.replace("runtime: docker", "runtime: ecs"))  # generated
    served = settings.with_(repos=(str(repo),))
    assert drift_check.look(redis, served, str(repo), budget_s=0.0) == 3600
    assert sorted(r.env for r in RunStore(redis).recent()) == ["development", "production", "staging"]
    assert {r.kind for r in RunStore(redis).recent()} == {"drift"}
