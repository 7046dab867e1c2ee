"""Terraform for Google Cloud Run and Azure Container Apps: generated for the example repository, formatted as
``terraform fmt`` wants (real terraform), passed by checkov's blocking set, hostile values kept as strings,
and said to be not applied here; a deploy to such a service is refused."""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.deploy import stage as deploy
from agents.iac import policy
from agents.iac import stage as iac
from agents.iac.generate import clouds, write
from bot.github.relay import render_comment, view_of
from orchestra.config import ProjectConfig, load_config
from orchestra.config.loader import parse_config
from orchestra.errors import ConfigError, OrchestraError, StageFailed
from orchestra.events import Event, EventBus, EventType
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Run
from tests.agents.iac import provider_schema

SHOP = PROJECT_ROOT / "examples" / "shop"
needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")
HOSTILE = '"}\nresource "null_resource" "x" {}\n# ${file("/etc/passwd")} %{ if true }\\'


def shop(backend: str, frontend: str | None = None, *, env: str = "") -> ProjectConfig:
    """The shop with its backend on ``backend`` and its frontend on ``frontend`` (the same when not given)."""
    text = (SHOP / "devops_orchestra.yaml").read_text()
    head, tail = text.split("name: frontend", 1)
    text = (head.replace("runtime: docker", f"runtime: {backend}", 1) + "name: frontend"
            + tail.replace("runtime: docker", f"runtime: {frontend or backend}", 1))
    if env:
        text = text.replace("          value: info\n", f"          value: info\n        - key: HOSTILE\n"
                                                      f"          value: {env}\n", 1)
    return parse_config(text, filename="devops_orchestra.yaml")


def _terraform(folder: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["terraform", *args], cwd=folder, input=stdin, capture_output=True, text=True, timeout=60,
                          check=False, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "CHECKPOINT_DISABLE": "1",
                                            "HOME": str(folder)})


def test_each_cloud_gets_its_resources_for_the_example_and_the_same_files_every_time() -> None:
    gcp = clouds.render(clouds.spec_for(shop("cloudrun"), "staging", "gcp"))
    assert sorted(gcp) == ["artifacts.tf", "cloudrun.tf", "iam.tf", "outputs.tf", "provider.tf", "variables.tf"]
    every = "".join(gcp.values())
    for resource in ("google_cloud_run_service", "google_artifact_registry_repository", "google_service_account",
                     "google_cloud_run_service_iam_member"):
        assert f'resource "{resource}"' in every
    assert '"allUsers"' not in every and '"allAuthenticatedUsers"' not in every
    azure = clouds.render(clouds.spec_for(shop("containerapps"), "production", "azure"))
    assert sorted(azure) == ["containerapps.tf", "logs.tf", "outputs.tf", "provider.tf", "registry.tf", "variables.tf"]
    every = "".join(azure.values())
    for resource in ("azurerm_resource_group", "azurerm_log_analytics_workspace", "azurerm_container_app_environment",
                     "azurerm_container_app", "azurerm_container_registry"):
        assert f'resource "{resource}"' in every
    assert clouds.render(clouds.spec_for(shop("cloudrun"), "staging", "gcp")) == gcp
    spec = clouds.spec_for(shop("containerapps", "docker"), "production", "azure")
    assert spec.services == {"backend": {"name": "backend-production", "image": "backend", "port": 5001,
                                         "health": "/health", "env": {"ENV": "production", "LOG_LEVEL": "info"},
                                         "min_replicas": 1}}


@pytest.mark.parametrize(("runtime", "cloud", "provider", "pin", "attack"), [
    ("cloudrun", "gcp", "google", '"~> 6.0"', ("  location   ", "  locatoin   ")),
    ("containerapps", "azure", "azurerm", '"~> 4.0"', ("target_port      =", "target_por       =")),
])
def test_the_generated_resources_match_the_providers_schema(runtime: str, cloud: str, provider: str, pin: str,
                                                           attack: tuple[str, str]) -> None:
    files = clouds.render(clouds.spec_for(shop(runtime), "staging", cloud))
    text = "".join(files.values())
    modules = {provider_schema.module(r) for r in re.findall(r'^resource "([^"]+)"', text, re.MULTILINE)}
    try:
        schema = provider_schema.types(provider, modules)
    except provider_schema.Unreachable as exc:
        pytest.skip(f"PyPI is unreachable, so the {provider} provider's schema cannot be fetched: {exc}")
    assert len(modules) >= 5 and pin in files["provider.tf"]  # the major version whose schema this is
    assert provider_schema.problems(text, schema) == []
    wrong = provider_schema.problems(text.replace(*attack), schema)  # the check itself sees a misspelt argument
    assert any("unknown" in p for p in wrong) and any("required" in p for p in wrong), wrong


def test_the_runtimes_are_read_and_a_near_miss_is_named() -> None:
    assert [s.runtime for s in shop("cloudrun", "containerapps").deployment.services] == ["cloudrun", "containerapps"]
    with pytest.raises(ConfigError) as caught:
        shop("cloudrum")
    assert "cloudrun" in str(caught.value) and "devops_orchestra.yaml" in str(caught.value)


def test_the_files_offered_in_the_event_are_capped() -> None:
    files = {"a.tf": "x" * 15_000, "b.tf": "y" * 15_000, "c.tf": "z"}
    offered = clouds._offered("infrastructure/generated-gcp/", files)
    assert offered["infrastructure/generated-gcp/a.tf"] == files["a.tf"]
    assert offered["infrastructure/generated-gcp/b.tf"] == "(too long for the event: see the folder)"
    assert offered["infrastructure/generated-gcp/c.tf"] == "(too long for the event: see the folder)"  # room used up


def test_cloud_names_keep_each_clouds_rules_whatever_the_project_is_called() -> None:
    name = "9-shop--" + "x" * 40  # a valid project name, but a cloud name must start with a letter, with single '-'
    text = (SHOP / "devops_orchestra.yaml").read_text().replace("  name: shop\n", f"  name: {name}\n", 1)
    config = parse_config(text.replace("runtime: docker", "runtime: cloudrun"), filename="devops_orchestra.yaml")
    gcp = clouds.render(clouds.spec_for(config, "production", "gcp"))["variables.tf"]
    assert 'default     = "o-9-shop-xxxxxxxxxxxxxxxxxxx"\n' in gcp  # the repository, 28 characters
    assert '"o-9-shop-xxxxxxxxxxxxx-run"' in gcp and '"o-9-shop-xxxxxxxxxxxxx-call"' in gcp  # 6-30 for accounts
    config = parse_config(text.replace("runtime: docker", "runtime: containerapps"), filename="devops_orchestra.yaml")
    azure = clouds.render(clouds.spec_for(config, "production", "azure"))["variables.tf"]
    assert '"o9shopxxxxxxxxxxxxxxxxxxximages"' in azure  # a registry: letters and digits only
    assert '"backend-production"' in azure and '"rg-o-9-shop-xxxxxxxxxxxxxxxxxxx"' in azure


def test_two_services_cut_to_the_same_cloud_name_are_refused_naming_both() -> None:
    text = (SHOP / "devops_orchestra.yaml").read_text().replace("runtime: docker", "runtime: containerapps")
    long = "a" * 40
    text = text.replace("name: backend", f"name: {long}-backend").replace("name: frontend", f"name: {long}-front")
    text = text.replace("depends_on: [backend]", f"depends_on: [{long}-backend]")
    with pytest.raises(OrchestraError, match=f"{long}-backend and {long}-front both become"):
        clouds.spec_for(parse_config(text, filename="devops_orchestra.yaml"), "staging", "azure")


@needs_terraform
def test_a_hostile_value_stays_a_string_formatted_as_fmt_wants(tmp_path: Path) -> None:
    spec = clouds.spec_for(shop("cloudrun"), "staging", "gcp")
    spec.services[HOSTILE] = {**spec.services["backend"], "name": HOSTILE, "image": HOSTILE, "env": {HOSTILE: HOSTILE}}
    files = clouds.render(spec)
    write(files, tmp_path)
    done = _terraform(tmp_path, "fmt", "-check", "-list=true")
    assert done.returncode == 0, done.stdout + done.stderr
    alone = tmp_path / "alone"  # variables.tf by itself: no provider to install, so it can be read back
    alone.mkdir()
    (alone / "variables.tf").write_text(files["variables.tf"])
    assert _terraform(alone, "init", "-input=false").returncode == 0
    every = ("flatten([for k, s in var.services : [sha256(k), sha256(s.name), "
             "[for n, v in s.env : [sha256(n), sha256(v)]]]])")
    read = _terraform(alone, "console", stdin=every + "\n")
    assert read.returncode == 0, read.stderr
    assert read.stdout.count(hashlib.sha256(HOSTILE.encode()).hexdigest()) == 4  # key, name, env name and value
    assert "null_resource" not in _terraform(alone, "providers").stdout


def _ctx(repo: Path, settings: Settings, redis: Redis, config: str) -> AgentContext:
    for name in ("backend", "frontend"):
        (repo / name).mkdir(exist_ok=True)
    (repo / "devops_orchestra.yaml").write_text(config)
    run = Run(requested_by="U0ALICE", repo=str(repo), services=[], env="staging")
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="iac")


@needs_terraform
def test_the_stage_generates_formats_and_scans_both_clouds_and_says_not_applied_here(
        tmp_path: Path, settings: Settings, redis: Redis) -> None:
    text = (SHOP / "devops_orchestra.yaml").read_text().replace("runtime: docker", "runtime: cloudrun", 1)
    text = text.replace("runtime: docker", "runtime: containerapps", 1).replace("value: info", "value: 'a\"${b}'")
    result = iac.run(_ctx(tmp_path, settings, redis, text))
    assert result.passed, result.summary
    assert "not applied here" in result.summary and "fmt passed" in result.summary
    assert "Google Cloud Run" in result.summary and "Azure Container Apps" in result.summary
    assert result.data["not_applied_here"] == clouds.NOT_HERE and "plan" not in result.data
    for cloud in ("gcp", "azure"):
        checked = result.data["clouds"][cloud]
        assert checked["policy"]["blocking"] == [] and checked["policy"]["passed"] >= 2
        assert f"infrastructure/generated-{cloud}/variables.tf" in checked["generated"]["files"]
        assert Path(checked["generated"]["folder"], "variables.tf").is_file()
    assert r'"a\"$${b}"' in result.data["clouds"]["gcp"]["generated"]["files"][
        "infrastructure/generated-gcp/variables.tf"]
    run = Run(kind="plan", source="github", requested_by="github:alice", repo=str(tmp_path), services=[],
              env="staging", origin={"repo": "o/shop", "sha": "d" * 40, "pr": 7})
    events = [Event(run_id=run.id, type=EventType.IAC_READY, actor="iac",
                    data={"stage": "iac", "passed": True, "summary": result.summary, **result.data})]
    body = render_comment(run, view_of(run, events))  # the PR comment of `/orchestra plan`
    assert "**Terraform plan**: Terraform not planned: " in body and "not applied here" in body


def test_aws_and_other_clouds_in_one_run_are_refused(tmp_path: Path, settings: Settings, redis: Redis) -> None:
    text = (SHOP / "devops_orchestra.yaml").read_text().replace("runtime: docker", "runtime: ecs", 1)
    text = text.replace("runtime: docker", "runtime: cloudrun", 1)
    result = iac.run(_ctx(tmp_path, settings, redis, text))
    assert not result.passed and "separate runs" in result.summary


def test_names_the_cloud_cannot_take_fail_the_stage_before_anything_runs(tmp_path: Path, settings: Settings,
                                                                       redis: Redis) -> None:
    text = (SHOP / "devops_orchestra.yaml").read_text().replace("runtime: docker", "runtime: containerapps")
    long = "a" * 40
    text = text.replace("name: backend", f"name: {long}-backend").replace("name: frontend", f"name: {long}-front")
    text = text.replace("depends_on: [backend]", f"depends_on: [{long}-backend]")
    for name in (f"{long}-backend", f"{long}-front"):
        (tmp_path / name).mkdir()
    result = iac.run(_ctx(tmp_path, settings, redis, text))
    assert not result.passed and "both become" in result.summary and "nothing was applied" in result.summary
    assert result.data["clouds"] == {}


def test_each_reviewed_attack_on_the_generated_files_blocks(tmp_path: Path) -> None:
    folder = tmp_path / "attacked"
    for cloud, runtime in (("gcp", "cloudrun"), ("azure", "containerapps")):
        for name, text in clouds.render(clouds.spec_for(shop(runtime), "staging", cloud)).items():
            (folder / cloud).mkdir(parents=True, exist_ok=True)
            (folder / cloud / name).write_text(text)
    iam = folder / "gcp" / "iam.tf"
    iam.write_text(iam.read_text().replace('"serviceAccount:${google_service_account.invoker.email}"', '"allUsers"'))
    registry = folder / "azure" / "registry.tf"
    registry.write_text(registry.read_text().replace("admin_enabled          = false",
                                                     "admin_enabled          = true").replace(
        "anonymous_pull_enabled = false", "anonymous_pull_enabled = true"))
    with pytest.raises(StageFailed) as caught:
        policy.scan(folder, "generated/", tmp_path / "scratch")
    said = str(caught.value)
    assert "4 blocking" in said and said.count("generated/gcp/iam.tf:18: CKV_GCP_102") == 2  # one per service
    assert "generated/azure/registry.tf:8: CKV_AZURE_137" in said and "registry.tf:8: CKV_AZURE_138" in said


def test_a_deploy_to_a_cloud_without_a_target_is_refused_clearly(tmp_path: Path, settings: Settings,
                                                                redis: Redis) -> None:
    ctx = _ctx(tmp_path, settings, redis, (SHOP / "devops_orchestra.yaml").read_text().replace(
        "runtime: docker", "runtime: cloudrun"))
    images = {name: {"image": f"shop-{name}:abc", "tag": "abc"} for name in ("backend", "frontend")}
    result = deploy.run(ctx, images=images)
    assert not result.passed, result.summary
    assert "runtime `cloudrun` has no deploy target here" in result.summary and "not applied" in result.summary
    assert "own pipeline" in result.data["hint"]
