"""Fields nothing acts on are refused at validation, with file, line, why and what to write instead."""
from __future__ import annotations

import pytest

from orchestra.config import parse_config
from orchestra.config.sections import NOTIFY_EVENTS
from orchestra.errors import ConfigError

BASE = "project:\n  name: shop\ndeployment:\n  services:\n    - name: api\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, filename="devops_orchestra.yaml")
    return caught.value.problems


def test_project_repo_is_refused_since_the_repository_is_where_the_file_is_read_from() -> None:
    text = "project:\n  name: shop\n  repo: https://github.com/acme/shop\ndeployment:\n  services:\n    - name: api\n"
    assert problems(text) == [
        "devops_orchestra.yaml:3: project.repo: not supported yet: project.repo = https://github.com/acme/shop; "
        "nothing reads it: the repository deployed is the one this file is read from (the GitHub push's, or one "
        "of the bot's ORCHESTRA_REPOS); remove project.repo"]


@pytest.mark.parametrize("context", ["app", "services/api", "docker/"])
def test_a_build_context_other_than_the_service_folder_is_refused_pointing_at_path(context: str) -> None:
    assert problems(BASE + f"build:\n  context: {context}\n") == [
        f"devops_orchestra.yaml:7: build.context: not supported yet: build.context = {context}; supported: . "
        "(each service is built with its own folder as the context); set the service's "
        f"`path: {context}` under deployment.services instead"]


@pytest.mark.parametrize("context", [".", "./", "'.'"])
def test_the_service_folder_as_build_context_stays_valid(context: str) -> None:
    assert parse_config(BASE + f"build:\n  context: {context}\n", filename="devops_orchestra.yaml").build.context


def test_a_build_context_that_climbs_out_is_refused_for_that_not_as_unsupported() -> None:
    [problem] = problems(BASE + "build:\n  context: ../other\n")
    assert problem.startswith("devops_orchestra.yaml:7: build.context: `../other` climbs out with `..`")


def test_notify_on_leaving_events_out_is_refused_naming_them() -> None:
    text = BASE + "chatops:\n  notify_on: [deployment_success, deployment_failure, rollback_triggered]\n"
    assert problems(text) == [
        "devops_orchestra.yaml:7: chatops.notify_on: not supported yet: chatops.notify_on without "
        "deployment_started, approval_requested, analysis_failure, test_failure, build_failure; every stage of a "
        "run is posted in its Slack thread; supported: every event (remove notify_on; chatops.enabled: false "
        "keeps runs not asked for in Slack out of the channel)"]


def test_notify_on_with_every_event_in_any_order_is_what_happens_and_is_the_default() -> None:
    every = ", ".join(reversed(NOTIFY_EVENTS))
    config = parse_config(BASE + f"chatops:\n  notify_on: [{every}]\n", filename="devops_orchestra.yaml")
    assert sorted(config.chatops.notify_on) == sorted(NOTIFY_EVENTS)
    assert parse_config(BASE, filename="devops_orchestra.yaml").chatops.notify_on == list(NOTIFY_EVENTS)


def test_notify_on_an_unknown_event_is_still_a_typo_with_a_suggestion() -> None:
    [problem] = problems(BASE + "chatops:\n  notify_on: [deployment_sucess]\n")
    assert "chatops.notify_on[0]: `deployment_sucess` is not allowed" in problem
    assert "(did you mean `deployment_success`?)" in problem


@pytest.mark.parametrize("runtime,why", [
    ("docker", "Prometheus scrapes /metrics of each container on this host"),
    ("ecs", "the canary judge reads CloudWatch, nothing scrapes the service"),
    ("lambda", "the canary judge reads CloudWatch, nothing scrapes the service")])
def test_a_metrics_path_is_refused_where_nothing_scrapes_it(runtime: str, why: str) -> None:
    text = BASE + f"      runtime: {runtime}\n      metrics: /stats\n"
    assert problems(text) == [
        f"devops_orchestra.yaml:7: deployment.services[0].metrics: not supported yet: metrics = /stats on runtime "
        f"`{runtime}` ({why}); supported: /metrics, or runtime `kubernetes` (the pods' prometheus.io/path "
        "annotation)"]


def test_the_default_metrics_path_stays_valid_everywhere_and_a_wrong_runtime_is_reported_once() -> None:
    for runtime in ("docker", "ecs", "ec2", "lambda", "kubernetes"):
        text = BASE + f"      runtime: {runtime}\n      metrics: /metrics\n"
        assert parse_config(text, filename="x").deployment.services[0].metrics == "/metrics"
    [problem] = problems(BASE + "      runtime: ecs2\n      metrics: /stats\n")
    assert "`ecs2` is not a runtime" in problem
