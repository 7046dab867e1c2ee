"""Each devops_orchestra.yaml field acts or is refused: here, the fields issue 13 found silently ignored."""
from __future__ import annotations

import pytest

from orchestra.config import parse_config
from orchestra.errors import ConfigError

SERVICE = """\
project:
  name: shop
deployment:
  services:
    - name: api
      runtime: {runtime}
      replicas: {replicas}
"""


def test_replicas_above_one_on_docker_are_refused_with_file_line_and_what_is_supported() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(SERVICE.format(runtime="docker", replicas=3), filename="devops_orchestra.yaml")
    assert caught.value.problems == [
        "devops_orchestra.yaml:7: deployment.services[0].replicas: not supported yet: replicas = 3 on runtime "
        "`docker` (one container per version on this host); supported: 1, or runtime `kubernetes`, `ecs` or "
        "`ec2` for more"]


def test_replicas_above_one_are_refused_when_runtime_is_left_to_its_docker_default() -> None:
    text = "project:\n  name: shop\ndeployment:\n  services:\n    - name: api\n      replicas: 2\n"
    with pytest.raises(ConfigError, match=r"devops_orchestra.yaml:6: .*not supported yet: replicas = 2"):
        parse_config(text, filename="devops_orchestra.yaml")


@pytest.mark.parametrize("runtime", ["kubernetes", "ecs"])
def test_replicas_act_on_runtimes_that_run_several(runtime: str) -> None:
    config = parse_config(SERVICE.format(runtime=runtime, replicas=3), filename="devops_orchestra.yaml")
    assert config.deployment.services[0].replicas == 3


def test_one_replica_on_docker_stays_valid() -> None:
    config = parse_config(SERVICE.format(runtime="docker", replicas=1), filename="devops_orchestra.yaml")
    assert config.deployment.services[0].replicas == 1


def test_replicas_above_one_on_lambda_are_refused() -> None:
    with pytest.raises(ConfigError, match=r":7: deployment.services\[0\].replicas: not supported yet: replicas = 2 "
                                          r"on runtime `lambda` \(Lambda scales itself\)"):
        parse_config(SERVICE.format(runtime="lambda", replicas=2), filename="devops_orchestra.yaml")


@pytest.mark.parametrize("field,value,supported", [
    ("type", "cloud", "local or on-premise"), ("type", "hybrid", "local or on-premise"),
    ("provider", "aws", "local"), ("provider", "gcp", "local"), ("provider", "custom", "local"),
    ("region", "eu-west-1", "the default us-west-2")])
def test_deployment_fields_nothing_reads_are_refused_unless_they_say_this_host(field: str, value: str,
                                                                                supported: str) -> None:
    text = f"project:\n  name: shop\ndeployment:\n  {field}: {value}\n  services:\n    - name: api\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, filename="devops_orchestra.yaml")
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(
        f"devops_orchestra.yaml:4: deployment.{field}: not supported yet: deployment.{field} = {value}; "
        f"supported: {supported}")


def test_deployment_defaults_and_the_examples_values_stay_valid() -> None:
    text = ("project:\n  name: shop\ndeployment:\n  type: on-premise\n  provider: local\n  region: us-west-2\n"
            "  services:\n    - name: api\n")
    config = parse_config(text, filename="devops_orchestra.yaml")
    assert (config.deployment.type, config.deployment.provider) == ("on-premise", "local")


@pytest.mark.parametrize("tool", ["maven", "npm", "poetry", "custom"])
def test_build_tools_other_than_docker_are_refused(tool: str) -> None:
    text = f"project:\n  name: shop\nbuild:\n  tool: {tool}\ndeployment:\n  services:\n    - name: api\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, filename="devops_orchestra.yaml")
    assert caught.value.problems == [
        f"devops_orchestra.yaml:4: build.tool: not supported yet: build.tool = {tool}; supported: docker (each "
        "service is built into an image from its Dockerfile, generated when it has none)"]


@pytest.mark.parametrize("tools,named", [("[prometheus, grafana]", "grafana"), ("[cloudwatch]", "cloudwatch"),
                                         ("[datadog, grafana]", "datadog, grafana")])
def test_observability_tools_other_than_prometheus_are_refused(tools: str, named: str) -> None:
    text = ("project:\n  name: shop\ndeployment:\n  services:\n    - name: api\n"
            f"observability:\n  tools: {tools}\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, filename="devops_orchestra.yaml")
    assert caught.value.problems == [
        f"devops_orchestra.yaml:7: observability.tools: not supported yet: observability.tools = {named}; "
        "supported: prometheus (scrapes each service for the canary judge and the watch; [] for none)"]


def test_observability_tools_prometheus_or_none_stay_valid() -> None:
    for tools, want in (("[prometheus]", ["prometheus"]), ("[]", [])):
        text = f"project:\n  name: shop\ndeployment:\n  services:\n    - name: api\nobservability:\n  tools: {tools}\n"
        assert parse_config(text, filename="devops_orchestra.yaml").observability.tools == want
