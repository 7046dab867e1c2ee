"""The typed configuration: value parsing, defaults, environment policy, the service graph."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from orchestra.config import FreezeWindow, ProjectConfig, canonical_env, parse_duration, parse_percent
from orchestra.errors import NotFound


def make(services: list[dict[str, Any]], **sections: Any) -> ProjectConfig:
    return ProjectConfig.model_validate({"project": {"name": "shop"}, "deployment": {"services": services},
                                         **sections})


SHOP = [{"name": "db", "port": 5432}, {"name": "backend", "port": 5001, "depends_on": ["db"]},
        {"name": "frontend", "port": 5000, "depends_on": ["backend"]},
        {"name": "worker", "port": 5002, "depends_on": ["db"]}]


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("500ms", 0.5), ("2d", 172800), (45, 45),
    ("90", 90), (" 10S ", 10), (1.5, 1.5), ("0s", 0),
])
def test_durations_parse_to_seconds(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "m5", "1h 30m", "-5m", "", "soon", True, None, [1]])
def test_bad_durations_say_how_to_write_one(text: object) -> None:
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(text)


@pytest.mark.parametrize("text, percent", [("2%", 2.0), (5, 5.0), ("0.5%", 0.5), ("100", 100.0), (0, 0.0)])
def test_percentages_parse_to_percent_numbers(text: object, percent: float) -> None:
    assert parse_percent(text) == percent


@pytest.mark.parametrize("text", ["101%", -1, "two", "2%%", False])
def test_bad_percentages(text: object) -> None:
    with pytest.raises(ValueError, match="percentage"):
        parse_percent(text)


def test_defaults_follow_the_documentation() -> None:
    config = make([{"name": "api"}])
    assert config.deployment.canary.steps == [10, 50, 100]
    assert config.deployment.blue_green.keep_previous == 3600
    assert config.rollback.max_automatic_per_hour == 3
    assert config.service("api").health == "/health" and config.service("api").path == "."
    production, staging = config.environment("production"), config.environment("staging")
    assert production.approval_required and production.branches == ["main"]
    assert not production.allow_self_approval and production.approval_timeout == 1800
    assert not staging.approval_required and not config.environment("development").approval_required
    assert production.strategy == staging.strategy == "blue-green"


def test_a_partial_environment_keeps_its_own_defaults() -> None:
    config = make([{"name": "api"}], environments={"prod": {"approvers": ["U0ALICE"]}, "stg": {"strategy": "canary"}})
    production = config.environment("production")
    assert production.approval_required and production.branches == ["main"]
    assert production.approvers == ["U0ALICE"]
    assert config.environment("staging").strategy == "canary"


@pytest.mark.parametrize("alias, name", [("prod", "production"), ("PROD", "production"), ("stg", "staging"),
                                         ("stage", "staging"), ("dev", "development"), ("staging", "staging")])
def test_environment_aliases(alias: str, name: str) -> None:
    assert canonical_env(alias) == name


def test_unknown_environment_and_service_suggest_a_name() -> None:
    config = make(SHOP)
    with pytest.raises(NotFound, match=r"unknown environment `prodution` \(did you mean `production`\?\)"):
        config.environment("prodution")
    with pytest.raises(NotFound, match=r"unknown service `frontnd` \(did you mean `frontend`\?\)"):
        config.service("frontnd")
    with pytest.raises(NotFound) as caught:
        config.service("inventory")
    assert "did you mean" not in caught.value.message and "backend" in (caught.value.hint or "")


def test_deploy_order_puts_dependencies_first() -> None:
    config = make(list(reversed(SHOP)))
    order = config.deploy_order()
    assert order.index("db") < order.index("backend") < order.index("frontend")
    assert order.index("db") < order.index("worker")
    assert config.deploy_order(["frontend", "db"]) == ["db", "frontend"]
    assert config.deploy_order(["frontend"]) == ["frontend"]
    with pytest.raises(NotFound):
        config.deploy_order(["frontend", "nope"])


@pytest.mark.parametrize("graph, cycle", [
    ({"a": ["a"]}, "a -> a"),
    ({"a": ["b"], "b": ["c"], "c": ["a"]}, "a -> b -> c -> a"),
    ({"a": [], "b": ["c"], "c": ["b"]}, "b -> c -> b"),
])
def test_cycles_are_rejected_with_the_path(graph: dict[str, list[str]], cycle: str) -> None:
    services = [{"name": n, "port": 5000 + i, "depends_on": deps} for i, (n, deps) in enumerate(graph.items())]
    with pytest.raises(ValidationError, match=f"dependency cycle: {cycle}"):
        make(services)


def test_policy_who_may_deploy_and_approve() -> None:
    config = make([{"name": "api"}], environments={"production": {
        "approvers": ["U0ALICE", "@bob"], "deployers": ["U0ALICE", "U0CAROL"]}})
    policy = config.environment("production")
    assert policy.may_deploy("U0CAROL") and policy.may_deploy("u0alice") and not policy.may_deploy("U0EVE")
    assert policy.may_approve("bob", requester="U0CAROL")
    assert not policy.may_approve("U0ALICE", requester="U0ALICE")
    assert not policy.may_approve("U0EVE", requester="U0CAROL")
    staging = config.environment("staging")
    assert staging.may_deploy("anyone") and staging.may_approve("U0EVE", requester="U0CAROL")


def test_branch_globs_pick_the_environments_of_a_push() -> None:
    config = make([{"name": "api"}], environments={"staging": {"branches": ["main", "release/*"]},
                                                   "dev": {"branches": ["feature/*"]}})
    assert config.environments_for_branch("main") == ["staging", "production"]
    assert config.environments_for_branch("release/1.2") == ["staging"]
    assert config.environments_for_branch("feature/x") == ["development"]
    assert config.environments_for_branch("hotfix") == []


def test_freeze_windows_absolute_and_weekly() -> None:
    xmas = FreezeWindow.model_validate({"start": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00Z"})
    assert xmas.active(datetime(2026, 12, 25, 12, tzinfo=UTC))
    assert not xmas.active(datetime(2026, 12, 27, 0, 0, 1, tzinfo=UTC))
    friday = FreezeWindow.model_validate({"days": ["fri"], "from": "16:00", "to": "23:59",
                                          "timezone": "Europe/Paris"})
    # 2026-11-20 is a Friday; 15:30 UTC is 16:30 in Paris.
    assert friday.active(datetime(2026, 11, 20, 15, 30, tzinfo=UTC))
    assert not friday.active(datetime(2026, 11, 20, 14, 30, tzinfo=UTC))
    assert not friday.active(datetime(2026, 11, 19, 15, 30, tzinfo=UTC))
    night = FreezeWindow.model_validate({"days": ["sat"], "from": "22:00", "to": "06:00"})
    assert night.active(datetime(2026, 11, 21, 23, tzinfo=UTC))  # Saturday night
    assert night.active(datetime(2026, 11, 22, 5, tzinfo=UTC))  # early Sunday, still Saturday's window
    assert not night.active(datetime(2026, 11, 23, 5, tzinfo=UTC))
    config = make([{"name": "api"}], environments={"production": {"freeze": [
        {"start": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00Z", "reason": "holidays"}]}})
    window = config.environment("production").frozen(datetime(2026, 12, 25, tzinfo=UTC))
    assert window is not None and "holidays" in window.describe()
    assert config.environment("production").frozen(datetime(2026, 12, 28, tzinfo=UTC)) is None


@pytest.mark.parametrize("steps", [[50, 10, 100], [10, 50], [0, 100], [10, 10, 100], [], [10, 150]])
def test_canary_steps_rise_to_100(steps: list[int]) -> None:
    with pytest.raises(ValidationError, match="canary plan"):
        make([{"name": "api"}], deployment={"services": [{"name": "api"}], "canary": {"steps": steps}})


def test_env_accepts_template_pairs_and_a_mapping() -> None:
    pairs = make([{"name": "api", "env": [{"key": "ENV", "value": "production"}, {"key": "N", "value": 3}]}])
    mapping = make([{"name": "api", "env": {"ENV": "production", "N": 3}}])
    assert pairs.service("api").env_dict() == mapping.service("api").env_dict() == {"ENV": "production", "N": "3"}


def test_paths_default_to_the_service_folder_when_there_are_several() -> None:
    config = make([{"name": "web", "port": 5000}, {"name": "api", "port": 5001, "path": "services/api"}])
    assert [s.path for s in config.deployment.services] == ["web", "services/api"]
    assert config.summary() == ("project shop: services web, api; environments production, staging, "
                                "development (approval required: production)")


def test_a_configuration_survives_a_json_round_trip() -> None:
    config = make(SHOP, environments={"production": {"freeze": [{"days": ["fri"], "from": "16:00", "to": "18:00"}]}},
                  rollback={"threshold": {"errors": "2%"}})
    data = config.model_dump(mode="json")
    assert ProjectConfig.model_validate(data).model_dump(mode="json") == data
    assert ProjectConfig.model_validate_json(config.model_dump_json(by_alias=True)).model_dump(mode="json") == data
