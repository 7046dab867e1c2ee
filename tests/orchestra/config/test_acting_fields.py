"""build.dockerfile and services[].metrics act: what the build and the deploy read comes from them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from redis import Redis

from agents.build import services_of
from agents.context import AgentContext
from agents.deploy.stage import plan_for
from agents.deploy.targets.kubernetes.manifests import deployment
from orchestra.config import CONFIG_FILENAME, load_config, validate_file
from orchestra.config.model import ProjectConfig
from orchestra.errors import ConfigError
from orchestra.events import EventBus
from orchestra.settings import Settings
from orchestra.store import Run

TWO_SERVICES = """\
project:
  name: shop
build:
  dockerfile: {build_dockerfile}
deployment:
  services:
    - name: api
      path: api
    - name: web
      path: web
      port: 5001
      dockerfile: Dockerfile.dev
"""


def _repo(tmp_path: Path, build_dockerfile: str) -> Path:
    repo = tmp_path / "repo"
    for name in ("api", "web"):
        (repo / name).mkdir(parents=True)
    (repo / CONFIG_FILENAME).write_text(TWO_SERVICES.format(build_dockerfile=build_dockerfile))
    return repo


def _ctx(repo: Path, config: ProjectConfig, settings: Settings, redis: Redis) -> AgentContext:
    run = Run(requested_by="U0ALICE", repo=str(repo), services=[], env="staging")
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=config, actor="test")


def test_build_dockerfile_is_what_the_build_reads_for_services_without_their_own(
        tmp_path: Path, settings: Settings, redis: Redis) -> None:
    repo = _repo(tmp_path, "docker/prod.Dockerfile")
    specs = {s.name: s for s in services_of(_ctx(repo, load_config(repo), settings, redis))}
    assert specs["api"].dockerfile == "docker/prod.Dockerfile"  # read as api/docker/prod.Dockerfile
    assert specs["web"].dockerfile == "Dockerfile.dev"  # the service's own wins


@pytest.mark.parametrize("build_dockerfile", ["Dockerfile", "'Dockerfile'", "./Dockerfile"])
def test_the_default_dockerfile_name_leaves_the_build_free_to_generate_a_missing_one(
        tmp_path: Path, settings: Settings, redis: Redis, build_dockerfile: str) -> None:
    repo = _repo(tmp_path, build_dockerfile)
    specs = {s.name: s for s in services_of(_ctx(repo, load_config(repo), settings, redis))}
    assert specs["api"].dockerfile is None  # ./Dockerfile when present, else generated
    assert specs["web"].dockerfile == "Dockerfile.dev"


def test_build_dockerfile_linked_out_of_a_service_folder_is_refused_once_at_its_line(tmp_path: Path) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "shadow").write_text("FROM scratch\nCOPY / /\n")
    repo = _repo(tmp_path, "Dockerfile.prod")
    os.symlink(outside / "shadow", repo / "api" / "Dockerfile.prod")  # the build would read the host's file
    os.symlink(outside / "shadow", repo / "web" / "Dockerfile.prod")  # web names its own: never read
    found = validate_file(repo / CONFIG_FILENAME)
    assert [p.removeprefix(f"{repo / CONFIG_FILENAME}:") for p in found] == [
        "4: build.dockerfile: `Dockerfile.prod` leads outside the repository through a symlink; give a path "
        "relative to the repository's root, such as `backend` or `docker/Dockerfile` that is not a link out of it"]
    with pytest.raises(ConfigError):
        load_config(repo)


def test_build_dockerfile_is_checked_in_each_services_default_folder_and_reported_once(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "api").mkdir(parents=True)
    (repo / "web").mkdir()
    os.symlink("/etc/passwd", repo / "api" / "Dockerfile.prod")
    os.symlink("/etc/shadow", repo / "web" / "Dockerfile.prod")  # two services, one field: one problem
    (repo / CONFIG_FILENAME).write_text("project:\n  name: shop\nbuild:\n  dockerfile: Dockerfile.prod\n"
                                        "deployment:\n  services:\n    - name: api\n"
                                        "    - name: web\n      port: 5001\n")
    [problem] = validate_file(repo / CONFIG_FILENAME)
    assert ":4: build.dockerfile: `Dockerfile.prod` leads outside the repository through a symlink" in problem


def test_a_metrics_path_on_kubernetes_is_the_pods_scrape_annotation(tmp_path: Path, settings: Settings,
                                                                     redis: Redis) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / CONFIG_FILENAME).write_text("project:\n  name: shop\ndeployment:\n  services:\n    - name: api\n"
                                        "      runtime: kubernetes\n      metrics: /internal/stats\n")
    ctx = _ctx(repo, load_config(repo), settings, redis)
    plan = plan_for(ctx, "api", {"image": "registry.local/shop-api:abc123", "version": "abc123"}, None)
    pod = deployment(plan, replicas=1, deadline_s=60)["spec"]["template"]["metadata"]["annotations"]
    assert pod["prometheus.io/path"] == "/internal/stats"
