"""The policy scan with the real checkov (scripts/setup's .venv-tools), run once for the module over the
generated shop Terraform and a hostile repository side by side, then the stage refusing to plan.

Attacks: a ``#checkov:skip`` comment and a ``.checkov.yaml`` that would switch off blocking checks, a file
whose name is Slack markup with a backtick, the worker's API key and proxy in the environment (checkov must
reach nothing), a checkov that runs past its time limit, a missing checkov, output too long or full of
control characters, a Terraform file linked from outside the folder.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from agents.iac import generate, policy, policy_report
from agents.iac import stage as iac
from bot.slack import views
from orchestra.config import load_config
from orchestra.errors import StageFailed
from orchestra.events import Event, EventType
from orchestra.settings import Settings
from tests.agents.iac.test_plan import REPO_TF, context, shop
from tests.support.moto import aws_env

pytestmark = pytest.mark.slow
Scanned = tuple[policy_report.Report, int, float, str | None]  # the report, proxy connections, seconds, connect() trace
MARKUP_NAME = "x`<!channel>.tf"
HOSTILE = {
    "ssh.tf": ('resource "aws_security_group" "ssh" {\n  name = "ssh"\n  #checkov:skip=CKV_AWS_24:we like it open\n'
               '  ingress {\n    from_port   = 22\n    to_port     = 22\n    protocol    = "tcp"\n'
               '    cidr_blocks = ["0.0.0.0/0"]\n  }\n}\n'),
    "rdp.tf": ('resource "aws_security_group" "rdp" {\n  name = "rdp"\n  ingress {\n    from_port   = 3389\n'
               '    to_port     = 3389\n    protocol    = "tcp"\n    cidr_blocks = ["0.0.0.0/0"]\n  }\n}\n'),
    "s3.tf": 'resource "aws_s3_bucket" "open" {\n  bucket = "open"\n  acl    = "public-read"\n}\n',
    "rds.tf": ('resource "aws_db_instance" "db" {\n  engine              = "postgres"\n  instance_class      = '
               '"db.t3.micro"\n  allocated_storage   = 20\n  publicly_accessible = true\n}\n'),
    "keys.tf": 'provider "aws" {\n  access_key = "AKIAIOSFODNN7EXAMPLE"\n  secret_key = "wJalrXUtnFEMI/K7MDENG"\n}\n',
    MARKUP_NAME: ('resource "aws_security_group" "all" {\n  ingress {\n    from_port   = 0\n    to_port     = 0\n'
                  '    protocol    = "-1"\n    cidr_blocks = ["0.0.0.0/0"]\n  }\n}\n'),
    ".checkov.yaml": "skip-check:\n  - CKV_AWS_25\n  - CKV_AWS_20\n",
}


class Listener:
    """A loopback socket counting the connections made to it (a proxy nobody should reach)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scanned]:
    """One checkov run over ``generated/`` (the shop on ECS and Lambda) and ``hostile/``, with an API key and
    a proxy in the worker's environment; the report, the proxy's connection count and the time it took."""
    root = tmp_path_factory.mktemp("policy")
    repo = shop(root, "ecs")
    config = repo / "devops_orchestra.yaml"
    config.write_text(config.read_text().replace("runtime: ecs", "runtime: lambda", 1))
    generate.write(generate.render(generate.spec_for(load_config(repo), "staging")), root / "tf" / "generated")
    hostile = root / "tf" / "hostile"
    hostile.mkdir()
    for name, text in HOSTILE.items():
        (hostile / name).write_text(text)
    (root / "tf" / ".checkov.yaml").write_text(HOSTILE[".checkov.yaml"])
    binary, trace = policy.checkov_binary(), root / "connect.trace"
    if shutil.which("strace"):  # every connect() checkov and its children make, written down
        wrapper = root / "checkov-traced"
        strace = shutil.which("strace")
        wrapper.write_text(f"#!/bin/sh\nexec {strace} -f -qq -e trace=connect -o {trace} {binary} \"$@\"\n")
        wrapper.chmod(0o755)
        binary = str(wrapper)
    proxy = Listener()
    saved = {k: os.environ.get(k) for k in ("BC_API_KEY", "HTTPS_PROXY", "HTTP_PROXY", "https_proxy")}
    os.environ.update({"BC_API_KEY": "00000000-0000-0000-0000-000000000000::secret", "HTTPS_PROXY": proxy.url,
                       "HTTP_PROXY": proxy.url, "https_proxy": proxy.url})
    try:
        started = time.monotonic()
        report = policy.run_checkov(root / "tf", policy.terraform_files(root / "tf"), "infra", root / "scratch",
                                    binary=binary, timeout=policy.TIMEOUT_S)
        took = time.monotonic() - started
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        proxy.close()
    yield report, proxy.connections, took, trace.read_text() if trace.exists() else None


def test_the_generated_terraform_passes_the_blocking_set(scanned: Scanned) -> None:
    report, _, took, _ = scanned
    generated = [f for f in report.blocking if f.file.startswith("infra/generated/")]
    assert generated == [], [f.shown() for f in generated]
    assert any(f.file.startswith("infra/generated/") for f in report.others)  # listed, not blocking
    assert report.version == "3.3.30" and took < 30


def test_each_reviewed_attack_blocks_with_file_line_and_what_to_fix(scanned: Scanned) -> None:
    report, _, _, _ = scanned
    found = {(f.check, f.file, f.line) for f in report.blocking}
    assert ("CKV_AWS_24", "infra/hostile/ssh.tf", 1) in found
    assert ("CKV_AWS_25", "infra/hostile/rdp.tf", 1) in found  # the .checkov.yaml never reached checkov
    assert ("CKV_AWS_20", "infra/hostile/s3.tf", 1) in found
    assert {("CKV_AWS_16", "infra/hostile/rds.tf", 1), ("CKV_AWS_17", "infra/hostile/rds.tf", 1)} <= found
    assert ("CKV_AWS_41", "infra/hostile/keys.tf", 1) in found
    assert any(check == "CKV_AWS_277" for check, _, _ in found)
    ssh = next(f for f in report.blocking if f.check == "CKV_AWS_24")
    assert ssh.skipped and "does not switch off" in ssh.shown() and "allow only known addresses" in ssh.shown()


def test_a_hostile_file_name_reaches_the_thread_as_text(scanned: Scanned) -> None:
    report, _, _, _ = scanned
    marked = next(f for f in report.blocking if "channel" in f.file)
    assert "`" not in marked.file
    reason = f"policy scan blocks: {marked.shown()}"
    event = Event(type=EventType.STAGE_FAILED, run_id="r1", actor="iac", data={"stage": "iac", "reason": reason})
    text = views.milestone(event) or ""
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text


def test_checkov_reaches_no_network_and_gets_no_key(scanned: Scanned) -> None:
    _, connections, _, trace = scanned
    assert connections == 0
    if trace is None:
        pytest.skip("strace is not installed: only the proxy's side was checked")
    assert "connect(" in trace, "the tracer saw none of checkov's connects (glibc's own lookups make some)"
    assert not [line for line in trace.splitlines() if "AF_INET" in line], trace[:2000]


def test_checkov_runs_where_nothing_is_reachable_not_even_loopback() -> None:
    prefix = policy.no_network()
    if not prefix:
        pytest.skip("this kernel lets no unprivileged process make a network namespace: the offline flags alone")
    listener = Listener()
    dial = ["/usr/bin/python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', "
                                      f"{listener.url.rsplit(':', 1)[1]}), timeout=2)"]
    try:
        assert subprocess.run(dial, capture_output=True, timeout=10, check=False).returncode == 0  # it can, outside
        inside = subprocess.run([*prefix, *dial], capture_output=True, text=True, timeout=10, check=False)
        time.sleep(0.3)
    finally:
        listener.close()
    assert inside.returncode != 0 and "unreachable" in inside.stderr.lower(), inside.stderr
    assert listener.connections == 1  # the one from outside


def test_hostile_output_is_capped_and_flattened() -> None:
    finding = {"check_id": "CKV_AWS_24\n<@U1>", "file_path": "/a\x1b[31m`.tf" + "x" * 5000, "file_line_range": ["7"],
               "resource": "r" * 1000, "check_name": "n"}
    report = policy_report.parse(json.dumps([{"summary": {"passed": 1, "checkov_version": "3.3.30"},
                                              "results": {"failed_checks": [finding] * 300}}]), "infra")
    assert len(report.others) == 300 and len(report.data()["others"]) == policy_report.MAX_KEPT
    one = report.others[0]
    assert "\n" not in one.check and "\x1b" not in one.file and "`" not in one.file
    assert len(one.file) <= 210 and len(one.resource) <= 120 and one.line == 7
    assert "12 more checks" not in report.line() and len(report.line()) < 400
    with pytest.raises(StageFailed, match="no readable report"):
        policy_report.parse("Traceback: boom", "infra")


def test_a_checkov_past_its_time_limit_is_stopped(tmp_path: Path) -> None:
    (tmp_path / "tf").mkdir()
    (tmp_path / "tf" / "main.tf").write_text(HOSTILE["rdp.tf"])
    started = time.monotonic()
    with pytest.raises(StageFailed, match="did not finish within 1s and was stopped"):
        policy.scan(tmp_path / "tf", "infra", tmp_path / "scratch", timeout=1.0)
    assert time.monotonic() - started < 3


def test_a_missing_checkov_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StageFailed, match="checkov is not installed") as failed:
        policy.checkov_binary(tmp_path / "no-venv", path=str(tmp_path))
    assert "scripts/setup" in str(failed.value)


def test_a_terraform_file_linked_from_outside_is_not_scanned(tmp_path: Path) -> None:
    (tmp_path / "tf").mkdir()
    (tmp_path / "secret.tf").write_text("# outside\n")
    (tmp_path / "tf" / "main.tf").symlink_to(tmp_path / "secret.tf")
    with pytest.raises(StageFailed, match="leads outside"):
        policy.scan(tmp_path / "tf", "infra", tmp_path / "scratch")


def test_the_stage_refuses_to_plan_a_repository_that_opens_ssh_to_the_world(
        tmp_path: Path, settings: Settings, redis: Redis, provider_mirror: Path, moto: str) -> None:
    repo = shop(tmp_path)
    (repo / "infra").mkdir()
    (repo / "infra" / "main.tf").write_text(REPO_TF)
    (repo / "infra" / "ssh.tf").write_text(HOSTILE["ssh.tf"])
    ctx = context(repo, settings.with_(terraform_mirror=provider_mirror, terraform_cli_config=None), redis)
    with aws_env(moto):
        result = iac.run(ctx)
    assert not result.passed and "plan" not in result.data
    assert "infra/ssh.tf:1: CKV_AWS_24 on aws_security_group.ssh" in result.summary
    assert "nothing was planned" in result.summary
    assert not list(repo.rglob("orchestra.tfplan"))


def test_the_same_files_are_judged_from_the_cached_report_and_changed_ones_are_scanned(tmp_path: Path) -> None:
    folder, cache = tmp_path / "tf", tmp_path / "cache"
    folder.mkdir()
    (folder / "rdp.tf").write_text(HOSTILE["rdp.tf"])
    with pytest.raises(StageFailed) as first:
        policy.scan(folder, "infra", tmp_path / "scratch", cache=cache)
    started = time.monotonic()
    with pytest.raises(StageFailed) as again:
        policy.scan(folder, "infra", tmp_path / "scratch", cache=cache)
    assert time.monotonic() - started < 1 and str(again.value) == str(first.value)
    assert len(list(cache.glob("*.json"))) == 1
    binary = policy.checkov_binary()
    key = policy.cache_key(binary, folder, [folder / "rdp.tf"])
    (folder / "rdp.tf").write_text(HOSTILE["rdp.tf"].replace("3389", "3390"))
    assert policy.cache_key(binary, folder, [folder / "rdp.tf"]) != key
    (folder / "rdp.tf").rename(folder / "other.tf")
    assert policy.cache_key(binary, folder, [folder / "other.tf"]) != key
