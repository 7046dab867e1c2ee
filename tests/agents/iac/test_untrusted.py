"""A repository's Terraform is code from the branch: attacks through it, and a Terraform that hangs.

* A committed ``.terraform`` folder holding a provider binary of the branch's choosing (with a lock file
  that vouches for it) would be run by ``terraform validate`` with the worker's AWS credentials: the stage
  keeps ``.terraform`` outside the checkout, so the real provider is installed and the lock file's hash
  refuses it, and nothing of the branch runs.
* ``terraform.d/plugins`` in the folder is an implied mirror when the CLI configuration names none: the
  stage's CLI configuration always names where providers come from, so it is never searched.
* A plan that never finishes (an endpoint that accepts and never answers) is stopped when the stage's
  Terraform time is up, Terraform and its provider plugin with it, and the stage says which command it
  stopped; so is one that the job's own time limit interrupts.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from agents.iac import stage as iac
from agents.iac import terraform
from orchestra.config import load_config
from orchestra.errors import OrchestraError
from orchestra.settings import Settings
from tests.agents.iac.test_plan import REPO_TF, after, context, planned, shop
from tests.support.moto import aws_env

pytestmark = pytest.mark.slow
PLATFORM = "registry.terraform.io/hashicorp/aws/3.39.0/linux_amd64"
REQUIRES_AWS = ('terraform {\n  required_providers {\n    aws = {\n      source  = "hashicorp/aws"\n'
                '      version = "3.39.0"\n    }\n  }\n}\n\nprovider "aws" {\n  region = "us-east-1"\n}\n')


def _fake_provider(folder: Path, marker: Path) -> None:
    """An executable named like the AWS provider that leaves ``marker`` behind if anything runs it."""
    folder.mkdir(parents=True)
    binary = folder / "terraform-provider-aws_v3.39.0_x5"
    binary.write_text(f"#!/bin/sh\necho ran > '{marker}'\nexit 1\n")
    binary.chmod(0o755)


def _h1(folder: Path) -> str:
    """Terraform's ``h1:`` hash of an unpacked provider folder (Go's dirhash.Hash1)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(folder)}\n".encode())
    return "h1:" + base64.b64encode(digest.digest()).decode()


def test_a_committed_terraform_folder_with_its_own_provider_never_runs(
        tmp_path: Path, settings: Settings, redis: Redis, provider_mirror: Path) -> None:
    repo, marker = shop(tmp_path), tmp_path / "ran"
    infra = repo / "infra"
    _fake_provider(infra / ".terraform" / "providers" / PLATFORM, marker)
    (infra / "main.tf").write_text(REQUIRES_AWS)
    (infra / ".terraform.lock.hcl").write_text(
        'provider "registry.terraform.io/hashicorp/aws" {\n  version     = "3.39.0"\n  constraints = "3.39.0"\n'
        f'  hashes = [\n    "{_h1(infra / ".terraform" / "providers" / PLATFORM)}",\n  ]\n}}\n')
    ctx = context(repo, settings.with_(terraform_mirror=provider_mirror, terraform_cli_config=None), redis)
    result = iac.run(ctx)
    assert not marker.exists(), "the branch's provider binary ran"
    assert not result.passed and "`terraform init` failed" in result.summary
    assert "doesn't match any of the checksums" in result.summary


def test_an_implied_plugin_folder_in_the_repository_is_never_searched(
        tmp_path: Path, settings: Settings, redis: Redis, provider_mirror: Path) -> None:
    repo, marker = shop(tmp_path), tmp_path / "ran"
    _fake_provider(repo / "infra" / "terraform.d" / "plugins" / PLATFORM, marker)
    (repo / "infra" / "main.tf").write_text(REQUIRES_AWS)
    ctx = context(repo, settings.with_(terraform_mirror=None, terraform_cli_config=None), redis)
    result = iac.run(ctx)  # the registry: unreachable here, so init fails; reachable, it installs the real one
    assert not marker.exists(), "the branch's provider binary ran"
    said = [e.data.get("message", "") for e in ctx.bus.replay(ctx.run.id)]
    assert any("providers from the public registry" in m for m in said), said
    assert result.passed or "`terraform init` failed" in result.summary


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A loopback HTTP endpoint that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def _processes_in(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == str(folder):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_plan_that_never_finishes_is_stopped_with_its_provider(
        tmp_path: Path, settings: Settings, redis: Redis, provider_mirror: Path, silent_endpoint: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(terraform, "STAGE_BUDGET_S", 12)  # all commands together; each alone may take 300 s
    monkeypatch.setattr(terraform, "STOP_GRACE_S", 2)
    repo = shop(tmp_path)
    (repo / "infra").mkdir()
    (repo / "infra" / "main.tf").write_text(REPO_TF)
    ctx = context(repo, settings.with_(terraform_mirror=provider_mirror, terraform_cli_config=None), redis)
    with aws_env(silent_endpoint):
        result = iac.run(ctx)
    assert not result.passed
    assert re.search(r"`terraform plan` did not finish within \d+s and was stopped", result.summary), result.summary
    assert _processes_in((repo / "infra").resolve()) == []  # neither Terraform nor its provider plugin is left


HOSTILE_HEALTH = '/health"}${path.cwd}%{endif}\\"#//*'


def test_a_hostile_service_name_is_refused_by_the_configuration(tmp_path: Path) -> None:
    repo = shop(tmp_path)
    config = repo / "devops_orchestra.yaml"
    config.write_text(config.read_text().replace("name: backend", "name: 'x\"; evil'", 1))
    with pytest.raises(OrchestraError) as refused:
        load_config(repo)
    assert "is not a valid name" in str(refused.value)


def test_a_hostile_health_path_reaches_the_plan_as_itself(
        tmp_path: Path, settings: Settings, redis: Redis, provider_mirror: Path, moto: str) -> None:
    """What the configuration lets through (a health path may hold quotes, ${ and %{) is planned literally."""
    repo = shop(tmp_path)
    config = repo / "devops_orchestra.yaml"
    config.write_text(config.read_text().replace("health: /health", f"health: {json.dumps(HOSTILE_HEALTH)}", 1))
    assert load_config(repo).service("backend").health == HOSTILE_HEALTH
    ctx = context(repo, settings.with_(terraform_mirror=provider_mirror, terraform_cli_config=None), redis)
    with aws_env(moto):
        result = iac.run(ctx)
    assert result.passed, result.summary
    plan = planned(ctx, settings.run_dir(ctx.run.id) / "infrastructure" / "generated")
    paths = {g["name"]: g["health_check"][0]["path"] for g in after(plan, "aws_lb_target_group")}
    assert paths == {"backend-blue": HOSTILE_HEALTH, "backend-green": HOSTILE_HEALTH,
                     "frontend-blue": "/health", "frontend-green": "/health"}
    assert result.data["plan"]["summary"] == "37 to add, 0 to change, 0 to destroy"  # nothing added by it


def test_the_jobs_time_limit_stops_terraform_and_its_provider_too(
        tmp_path: Path, settings: Settings, redis: Redis, provider_mirror: Path, silent_endpoint: str) -> None:
    """RQ ends a job past its time limit by raising in the job's process (then kills the job's process group);
    Terraform has a session of its own, so the stage stops it itself on the way out."""
    repo = shop(tmp_path)
    (repo / "infra").mkdir()
    (repo / "infra" / "main.tf").write_text(REPO_TF)
    ctx = context(repo, settings.with_(terraform_mirror=provider_mirror, terraform_cli_config=None), redis)
    with aws_env(silent_endpoint), pytest.raises(JobTimeoutException):
        with UnixSignalDeathPenalty(10, JobTimeoutException, job_id="iac"):
            iac.run(ctx)  # init and validate finish; the plan waits on the silent endpoint until the limit
    assert _processes_in((repo / "infra").resolve()) == []
