"""The sections of devops_orchestra.yaml around the deployment: project, build, testing, infrastructure,
secrets, rollback, observability and chatops.

Each field either acts or is refused here with ``not supported yet: <field> = <value>; supported: ...``
(the loader adds the file and line): a value that validates and then changes nothing would lie.
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from orchestra.config.environments import StrictModel
from orchestra.config.paths import RepoPath
from orchestra.config.types import Duration, EnvKey, Name, Percent, did_you_mean

Tool = Literal["prometheus", "grafana", "cloudwatch", "datadog"]
NotifyEvent = Literal["deployment_started", "deployment_success", "deployment_failure", "rollback_triggered",
                      "approval_requested", "analysis_failure", "test_failure", "build_failure"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = ("deployment_started", "deployment_success", "deployment_failure",
                                          "rollback_triggered", "approval_requested", "analysis_failure",
                                          "test_failure", "build_failure")
DEFAULT_DOCKERFILE = "Dockerfile"
MIN_INTERVAL_S = 5.0  # observability.interval: the always-on watch's looks
MIN_DRIFT_CHECK_S = 900.0  # infrastructure.drift_check: each check refreshes every resource of every environment


class Project(StrictModel):
    name: Name
    language: Literal["python", "node", "go", "java", "other"] = "python"
    framework: str | None = None
    repo: str | None = None

    @field_validator("repo")
    @classmethod
    def _repo_is_where_the_file_is(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(f"not supported yet: project.repo = {value}; nothing reads it: the repository "
                             "deployed is the one this file is read from (the GitHub push's, or one of the "
                             "bot's ORCHESTRA_REPOS); remove project.repo")
        return value


class Build(StrictModel):
    """How each service's image is built: with docker, from its own folder (``services[].path``) as the
    context, with ``dockerfile`` (relative to that folder) unless the service names its own."""

    tool: Literal["docker", "maven", "npm", "poetry", "custom"] = "docker"
    context: RepoPath = "."
    dockerfile: RepoPath = DEFAULT_DOCKERFILE
    base_image: str | None = None

    @field_validator("tool")
    @classmethod
    def _docker_builds(cls, value: str) -> str:
        if value != "docker":
            raise ValueError(f"not supported yet: build.tool = {value}; supported: docker (each service is "
                             "built into an image from its Dockerfile, generated when it has none)")
        return value

    @field_validator("context")
    @classmethod
    def _service_folder_is_the_context(cls, value: str) -> str:
        if PurePosixPath(value.replace("\\", "/")) != PurePosixPath("."):
            raise ValueError(f"not supported yet: build.context = {value}; supported: . (each service is "
                             "built with its own folder as the context); set the service's "
                             f"`path: {value}` under deployment.services instead")
        return value

MAX_TEST_ID = 300


class Testing(StrictModel):
    """How services are tested. A failing test is re-run alone ``reruns`` times: one that then passes is
    flaky and blocks only with ``flaky_blocks``; ``quarantine`` names tests (pytest node ids relative to the
    service folder, ``tests/test_x.py::test_y``; Node ``file > name``) run and reported, never blocking.
    Where a model is configured, a fix it suggests for a flaky Python test is offered only if the test then
    passes ``fix_runs`` consecutive re-runs alone (agents/testing/flaky_fix.py)."""

    enabled: bool = True
    framework: Literal["pytest", "unittest", "jest", "mocha", "go", "junit", "npm", "custom"] = "pytest"
    command: str | None = None
    timeout: Duration = 600.0
    reruns: int = Field(default=2, ge=0, le=10, strict=True)
    quarantine: list[str] = Field(default_factory=list)
    flaky_blocks: bool = Field(default=False, strict=True)
    fix_runs: int = Field(default=5, ge=1, le=20, strict=True)

    @field_validator("quarantine")
    @classmethod
    def _test_ids(cls, ids: list[str]) -> list[str]:
        for test in ids:
            if not test.strip() or len(test) > MAX_TEST_ID or any(ord(c) < 32 for c in test) \
                    or ("::" not in test and " > " not in test) or test.startswith(("-", "/", "@")):
                raise ValueError(f"testing.quarantine: `{test[:80]}` is not a test id; write a pytest node id "
                                 "relative to the service folder (`tests/test_pay.py::test_retry`) or, for a Node "
                                 f"service, `file > name` (`src/pay.test.js > retries`), one line, at most "
                                 f"{MAX_TEST_ID} characters")
        if len(set(ids)) != len(ids):
            raise ValueError("testing.quarantine names a test twice; list each test once")
        return ids


_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_STATE_NAME = re.compile(r"^[A-Za-z0-9._/-]*$")


class S3Backend(StrictModel):
    """Terraform state in S3, locked in a DynamoDB table (agents/iac/backend.py): the state of project P in
    environment E is ``s3://<bucket>/<key_prefix>P/E/terraform.tfstate``."""

    bucket: str
    key_prefix: str = "orchestra/"
    region: str
    dynamodb_table: str

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not _S3_BUCKET.match(value) or ".." in value:
            raise ValueError(f"`{value[:80]}` is not an S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _STATE_NAME.match(value) or value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"`{value[:80]}` is not a key prefix: letters, digits, '.', '_', '-' and '/' "
                             "(not leading, no '..'), e.g. `orchestra/`")
        return value

    @field_validator("region", "dynamodb_table")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9._-]{1,255}$", value):
            raise ValueError(f"`{value[:80]}` is not a region or table name (letters, digits, '.', '_', '-')")
        return value


class Backend(StrictModel):
    """Where Terraform keeps state: ``s3`` (with DynamoDB locking), or, when not set, the local backend in the
    worker's workdir, one state per project and environment."""

    s3: S3Backend | None = None


class Infrastructure(StrictModel):
    """Where the repository's infrastructure code is (agents/iac): only Terraform is read."""

    tool: str = "terraform"
    path: RepoPath = "infra/"
    drift_check: Duration | None = None  # how often each environment is looked at for drift (jobs.timers); None: never
    backend: Backend = Field(default_factory=Backend)

    @field_validator("tool")
    @classmethod
    def _supported_tool(cls, value: str) -> str:
        if value == "terraform":
            return value
        if value in ("cloudformation", "ansible", "pulumi", "tofu", "opentofu"):
            raise ValueError(f"infrastructure tool `{value}` is not supported yet; use `terraform`")
        raise ValueError(f"`{value}` is not an infrastructure tool; use `terraform`")

    @field_validator("drift_check")
    @classmethod
    def _drift_check_not_too_often(cls, value: float | None) -> float | None:
        if value is not None and value < MIN_DRIFT_CHECK_S:
            raise ValueError(f"infrastructure.drift_check = {value:g}s is too often: each check reads every resource "
                             "of every environment back from the cloud's API (which rate-limits it); write "
                             f"{MIN_DRIFT_CHECK_S / 60:.0f}m or more (e.g. 6h), or leave it out for no scheduled check")
        return value


SECRET_MANAGERS = ("env", "aws_secrets_manager", "kubernetes")


class Secrets(StrictModel):
    """Where the values of ``keys`` come from: ``env``, the bot's own environment; ``aws_secrets_manager``,
    the secret ``<env>/<KEY>`` (ECS: ``ecs.secret_prefix``); ``kubernetes``, the Secret ``<service>-secrets``
    the platform created in the namespace. Every target hands them to the application
    (agents/deploy/targets/secrets.py)."""

    manager: str = "env"
    keys: list[EnvKey] = Field(default_factory=list)

    @field_validator("manager")
    @classmethod
    def _supported_manager(cls, value: str) -> str:
        if value in SECRET_MANAGERS:
            return value
        supported = "`env` (the bot's environment), `aws_secrets_manager` or `kubernetes` (a Secret in the namespace)"
        if value in ("vault", "gcp_secret_manager", "azure_key_vault"):
            raise ValueError(f"not supported yet: secrets.manager `{value}`; use {supported}")
        raise ValueError(f"`{value}` is not a secrets manager{did_you_mean(value, SECRET_MANAGERS)}; use {supported}")


class RollbackThreshold(StrictModel):
    """Automatic rollback when any of these is exceeded for ``duration``."""

    error_rate: Percent = Field(default=5.0, validation_alias=AliasChoices("error_rate", "errors"))
    latency_ms: int | None = Field(default=1000, ge=1)
    cpu: Percent | None = 90.0
    memory_mb: int | None = Field(default=None, ge=1)
    duration: Duration = 300.0


class Rollback(StrictModel):
    enabled: bool = True
    threshold: RollbackThreshold = Field(default_factory=RollbackThreshold,
                                         validation_alias=AliasChoices("threshold", "thresholds"))
    max_automatic_per_hour: int = Field(default=3, ge=0)


class Alert(StrictModel):
    type: Literal["latency", "error_rate", "cpu", "memory"]
    threshold_ms: int | None = Field(default=None, ge=1)
    threshold: Percent | None = None
    threshold_mb: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _threshold_for_type(self) -> Alert:
        wanted = {"latency": "threshold_ms", "memory": "threshold_mb"}.get(self.type, "threshold")
        if getattr(self, wanted) is None:
            raise ValueError(f"a `{self.type}` alert needs `{wanted}`")
        return self


def _default_alerts() -> list[Alert]:
    return [Alert(type="latency", threshold_ms=500), Alert(type="error_rate", threshold=2.0)]


class Observability(StrictModel):
    enabled: bool = True
    tools: list[Tool] = Field(default_factory=lambda: list[Tool](["prometheus"]))
    alerts: list[Alert] = Field(default_factory=_default_alerts)
    watch: Duration = 300.0
    always_on: bool = True  # every live release is looked at on a schedule after its watch (always_on.py)
    interval: Duration = 60.0  # how often the always-on watch looks at each live release
    guard: Duration = 86400.0  # after going live, an anomaly within this rolls back; later it restarts

    @field_validator("interval")
    @classmethod
    def _interval_not_too_short(cls, value: float) -> float:
        if value < MIN_INTERVAL_S:
            raise ValueError(f"observability.interval = {value:g}s is too short: each look is a job and "
                             f"Prometheus needs a few scrapes between looks; write {MIN_INTERVAL_S:.0f}s or more "
                             "(e.g. 1m)")
        return value

    @field_validator("tools")
    @classmethod
    def _prometheus_only(cls, tools: list[str]) -> list[str]:
        ignored = [t for t in tools if t != "prometheus"]
        if ignored:
            raise ValueError(f"not supported yet: observability.tools = {', '.join(ignored)}; supported: "
                             "prometheus (scrapes each service for the canary judge and the watch; [] for none)")
        return tools


class ChatOps(StrictModel):
    enabled: bool = True
    platform: Literal["slack"] = "slack"
    channel: str = "#devops-orchestra"
    notify_on: list[NotifyEvent] = Field(default_factory=lambda: list(NOTIFY_EVENTS))

    @field_validator("notify_on")
    @classmethod
    def _every_event_is_posted(cls, events: list[str]) -> list[str]:
        left_out = [e for e in NOTIFY_EVENTS if e not in events]
        if left_out:
            raise ValueError(f"not supported yet: chatops.notify_on without {', '.join(left_out)}; every stage "
                             "of a run is posted in its Slack thread; supported: every event (remove notify_on; "
                             "chatops.enabled: false keeps runs not asked for in Slack out of the channel)")
        return events

    @field_validator("channel")
    @classmethod
    def _channel_name(cls, value: str) -> str:
        if not (value.startswith("#") and len(value) > 1) and not (value[:1] in "CG" and value.isalnum()):
            raise ValueError(f"`{value}` is not a Slack channel; write it as \"#name\" (quoted) or a channel id")
        return value
