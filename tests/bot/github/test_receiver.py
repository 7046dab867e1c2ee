"""The webhook receiver over HTTP: signed real payloads in, runs (or clear refusals) out.

A real aiohttp server, real Redis, the real dispatch, and the local GitHub API server
for permission checks, changed files and replies.
"""
from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from bot.github.handoff import DeliveryOutcome, outcome
from bot.github.receiver import build_webhook_app, signature_ok
from orchestra.errors import OrchestraError
from orchestra.events import EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Audit, RunStore
from tests.support.fake_github import FakeGitHub, fake_github, serve_in_thread
from tests.support.github_payloads import PR_SHA, REPO, SECRET, body_of, headers, load, pr_comment, push
from tests.support.services import free_port, wait_for

CONFIG = """\
project:
  name: hello
deployment:
  services:
    - name: backend
      path: backend
      port: 5001
    - name: frontend
      path: frontend
      depends_on: [backend]
environments:
  production:
    branches: ["release/*"]
  staging:
    branches: [main]
"""


@dataclass
class Hook:
    url: str
    redis: Redis
    gh: FakeGitHub

    def post(self, event: str, payload: Any, *, delivery: str | None = None, secret: str = SECRET,
             raw: bytes | None = None, extra: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        body = raw if raw is not None else body_of(payload)
        hdrs = {**headers(event, body, secret=secret, delivery=delivery), **(extra or {})}
        request = urllib.request.Request(f"{self.url}/github/webhook", data=body, headers=hdrs, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            text = err.read()
            return err.code, json.loads(text) if text.startswith(b"{") else {"text": text.decode()}

    def deliver(self, event: str, payload: Any) -> DeliveryOutcome:
        """Post a delivery that must be accepted, and wait for what became of it."""
        delivery = str(uuid.uuid4())
        status, answer = self.post(event, payload, delivery=delivery)
        assert (status, answer["result"]) == (202, "accepted"), answer
        return wait_for(lambda: outcome(self.redis, delivery), what=f"outcome of {delivery}")  # type: ignore


@pytest.fixture
def hello_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "Codertocat" / "Hello-World"  # served as owner/name: only that repository's deliveries
    for folder in ("frontend", "backend"):
        (repo / folder).mkdir(parents=True)
        (repo / folder / "app.py").write_text("print('hello')\n")
    (repo / "devops_orchestra.yaml").write_text(CONFIG)
    return repo


@pytest.fixture
def hook(settings: Settings, redis: Redis, hello_repo: Path) -> Iterator[Hook]:
    with fake_github() as gh:
        served = settings.with_(github_webhook_secret=SECRET, github_token=gh.token, github_api_url=gh.url,
                                repos=(str(hello_repo),))
        with serve_in_thread(build_webhook_app(served, redis=redis), name="webhooks") as url:
            yield Hook(url, redis, gh)


def test_signature_matches_githubs_documented_vector() -> None:
    good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature_ok("It's a Secret to Everybody", b"Hello, World!", good)
    assert not signature_ok("It's a Secret to Everybody", b"Hello, World?", good)
    assert not signature_ok("another secret", b"Hello, World!", good)
    assert not signature_ok("It's a Secret to Everybody", b"Hello, World!", good.removeprefix("sha256="))
    assert not signature_ok("It's a Secret to Everybody", b"Hello, World!", None)


def test_refuses_to_start_without_a_secret_outside_dev_mode(settings: Settings, redis: Redis) -> None:
    with pytest.raises(OrchestraError, match="GITHUB_WEBHOOK_SECRET is not set"):
        build_webhook_app(settings, redis=redis)
    assert build_webhook_app(settings.with_(dev_mode=True), redis=redis) is not None


def test_ping_and_bad_signatures(hook: Hook) -> None:
    assert hook.post("ping", load("ping.payload.json")) == \
        (200, {"result": "pong", "reason": "Anything added dilutes everything else."})
    status, answer = hook.post("push", push("main", ["frontend/app.py"]), secret="wrong")
    assert status == 401 and "X-Hub-Signature-256 does not match" in answer["reason"]
    assert RunStore(hook.redis).recent() == []


@pytest.mark.parametrize(("event", "fixture", "reason"), [
    ("push", "push.payload.json", "refs/tags/simple-tag is not a branch push"),
    ("pull_request", "pull_request.closed.payload.json", "'closed' starts nothing"),
    ("issue_comment", "issue_comment.created.payload.json", "on an issue, not a pull request"),
    ("pull_request_review", "pull_request_review.submitted.payload.json", "is not used"),
    ("push", "push.with-new-branch.payload.json", "branch 'master' deploys to no environment"),
])
def test_deliveries_that_start_nothing_get_202_and_a_reason(hook: Hook, event: str, fixture: str,
                                                              reason: str) -> None:
    delivery = str(uuid.uuid4())
    status, answer = hook.post(event, load(fixture), delivery=delivery)
    assert status == 202 and answer["result"] in ("ignored", "accepted")
    if answer["result"] == "accepted":  # decided after the answer, once the config is read
        result = wait_for(lambda: outcome(hook.redis, delivery))
        assert result == DeliveryOutcome("ignored", reason)  # type: ignore[comparison-overlap]
    else:
        assert reason in answer["reason"]
    assert RunStore(hook.redis).recent() == []


@pytest.mark.parametrize(("raw", "hdrs", "problem"), [
    (b"{not json", {}, "not valid JSON"),
    (b'{"ref": "refs/heads/main"}', {}, "`repository` is missing"),
    (b"[" * 100_000 + b"]" * 100_000, {}, "not valid JSON"),
    (b"{}", {"X-GitHub-Event": ""}, "X-GitHub-Event and X-GitHub-Delivery headers are required"),
])
def test_malformed_deliveries_get_400(hook: Hook, raw: bytes, hdrs: dict[str, str], problem: str) -> None:
    status, answer = hook.post("push", None, raw=raw, extra=hdrs)
    assert status == 400 and problem in answer["reason"]


def test_bodies_over_the_cap_get_413(settings: Settings, redis: Redis) -> None:
    app = build_webhook_app(settings.with_(github_webhook_secret=SECRET), redis=redis, max_body_bytes=4096)
    with serve_in_thread(app) as url:
        status, _ = Hook(url, redis, FakeGitHub()).post("push", push("main", ["x" * 5000]))
    assert status == 413


@pytest.mark.parametrize("full_name", ["someone/else", "mallory/Hello-World", "Codertocat/Hello-World-fork"])
def test_unserved_repositories_are_ignored(hook: Hook, full_name: str) -> None:
    payload = push("main", ["frontend/app.py"])
    payload["repository"]["full_name"] = full_name  # a namesake under another owner is not the served repository
    status, answer = hook.post("push", payload)
    assert status == 202 and f"{full_name} is not served" in answer["reason"]
    assert RunStore(hook.redis).recent() == []


def test_push_to_a_deploy_branch_starts_a_run_once(hook: Hook, hello_repo: Path) -> None:
    delivery = str(uuid.uuid4())
    status, _ = hook.post("push", push("main", ["frontend/app.py"], sha="b" * 40), delivery=delivery)
    assert status == 202
    result = wait_for(lambda: outcome(hook.redis, delivery))
    assert isinstance(result, DeliveryOutcome) and result.status == "started", result
    run = RunStore(hook.redis).get(str(result.run_id))
    assert (run.source, run.kind, run.env, run.services, run.commit, run.repo) == \
        ("github", "deploy", "staging", ["backend", "frontend"], "b" * 40, str(hello_repo))  # backend not live
    assert run.origin["delivery"] == delivery and run.origin["changed_files"] == ["frontend/app.py"]
    assert EventBus(hook.redis).replay(run.id)[0].type == EventType.CODE_PUSH
    # GitHub redelivers with the same id: nothing new starts
    assert hook.post("push", push("main", ["frontend/app.py"], sha="b" * 40), delivery=delivery)[0] == 200
    assert [r.id for r in RunStore(hook.redis).recent()] == [run.id]


def test_a_form_encoded_delivery_is_accepted(hook: Hook) -> None:
    raw = urllib.parse.urlencode({"payload": json.dumps(push("main", ["backend/app.py"]))}).encode()
    status, answer = hook.post("push", None, raw=raw,
                               extra={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, answer["result"]) == (202, "accepted")


def test_an_opened_pull_request_starts_a_validation_of_its_changed_services(hook: Hook) -> None:
    hook.gh.add_pull(REPO, 2, sha=PR_SHA, files=["backend/app.py"])
    result = hook.deliver("pull_request", load("pull_request.opened.payload.json"))
    assert result.status == "started", result
    run = RunStore(hook.redis).get(str(result.run_id))
    assert (run.kind, run.services, run.commit, run.origin["pr"]) == ("validate", ["backend"], PR_SHA, 2)
    assert hook.gh.calls_to("GET", f"/repos/{REPO}/pulls/2/files")


def _comment(hook: Hook, body: str, user: str) -> tuple[DeliveryOutcome, list[str]]:
    result = hook.deliver("issue_comment", pr_comment(body, user=user))
    return result, hook.gh.comment_bodies(REPO, 2)


def test_a_writer_deploys_the_pull_request_head_from_a_comment(hook: Hook) -> None:
    hook.gh.permissions[(REPO, "alice")] = "write"
    hook.gh.add_pull(REPO, 2, sha=PR_SHA, files=["frontend/app.py"])
    result, replies = _comment(hook, "/orchestra deploy stg", "alice")
    assert result.status == "started" and replies == []
    run = RunStore(hook.redis).get(str(result.run_id))
    assert (run.kind, run.env, run.commit, run.requested_by, run.services) == \
        ("deploy", "staging", PR_SHA, "github:alice", ["backend", "frontend"])  # backend is not live


@pytest.mark.parametrize(("user", "permission", "head_repo", "reply"), [
    ("mallory", None, REPO, "only takes commands from collaborators"),
    ("reader", "read", REPO, "needs write permission"),
    ("alice", "admin", "mallory/Hello-World", "comes from a fork"),
])
def test_comment_deploys_that_are_refused(hook: Hook, user: str, permission: str | None, head_repo: str,
                                          reply: str) -> None:
    if permission:
        hook.gh.permissions[(REPO, user)] = permission
    hook.gh.add_pull(REPO, 2, sha=PR_SHA, head_repo=head_repo)
    result, replies = _comment(hook, "/orchestra deploy production", user)
    assert result.status == "refused" and len(replies) == 1 and reply in replies[0]
    assert RunStore(hook.redis).recent() == []
    [audited] = [a for a in Audit(hook.redis).entries() if a["action"] == "request_refused"]
    assert audited["actor"] == f"github:{user}" and audited["detail"]["reason"] == result.reason


def test_status_help_and_unknown_commands_are_answered_in_the_pull_request(hook: Hook) -> None:
    hook.gh.permissions[(REPO, "alice")] = "write"
    hook.gh.add_pull(REPO, 2, sha=PR_SHA, files=["backend/app.py"])
    started = hook.deliver("pull_request", load("pull_request.opened.payload.json"))
    assert _comment(hook, "/orchestra status", "alice")[0].status == "answered"
    assert _comment(hook, "/orchestra frobnicate", "alice")[0].status == "ignored"
    replies = hook.gh.comment_bodies(REPO, 2)
    assert f"`{started.run_id}` | validate" in replies[0]
    assert "unknown command `frobnicate`" in replies[1] and "/orchestra deploy <env>" in replies[1]


def test_a_refused_dispatch_is_explained_in_the_pull_request(hook: Hook, hello_repo: Path) -> None:
    (hello_repo / "devops_orchestra.yaml").write_text(CONFIG.replace(
        "    branches: [main]", "    branches: [main]\n    deployers: [bob]"))
    hook.gh.permissions[(REPO, "alice")] = "write"
    hook.gh.add_pull(REPO, 2, sha=PR_SHA, files=["backend/app.py"])
    result, replies = _comment(hook, "/orchestra deploy staging", "alice")
    assert result.status == "refused" and "may not deploy to staging" in replies[0]


def test_a_pull_request_cannot_make_its_commenter_a_deployer(hook: Hook, hello_repo: Path) -> None:
    gate = "    branches: [main]\n    deployers: [{who}]"
    (hello_repo / "devops_orchestra.yaml").write_text(CONFIG.replace("    branches: [main]", gate.format(who="bob")))
    hook.gh.contents[(REPO, "devops_orchestra.yaml", PR_SHA)] = CONFIG.replace(  # what the pull request says
        "    branches: [main]", gate.format(who="github:alice"))
    hook.gh.permissions[(REPO, "alice")] = "write"
    hook.gh.add_pull(REPO, 2, sha=PR_SHA, files=["backend/app.py"])
    result, replies = _comment(hook, "/orchestra deploy staging", "alice")
    assert result.status == "refused" and "github:alice may not deploy to staging" in replies[0]
    assert "deployers for staging: bob" in replies[0] and RunStore(hook.redis).recent() == []


def test_plan_is_answered_from_the_configuration(hook: Hook) -> None:
    hook.gh.permissions[(REPO, "reader")] = "read"
    hook.gh.add_pull(REPO, 2, sha=PR_SHA, files=["frontend/app.py"])
    result, replies = _comment(hook, "/orchestra plan", "reader")
    assert result.status == "answered" and RunStore(hook.redis).recent() == []
    assert "**Plan for #2** at `ec26c3e`" in replies[0] and "in order: `frontend`." in replies[0]
    assert "| production | blue-green | required | `release/*` |" in replies[0]


def test_an_invalid_configuration_marks_the_pushed_commit(hook: Hook, hello_repo: Path) -> None:
    (hello_repo / "devops_orchestra.yaml").write_text(CONFIG.replace("port: 5001", "port: 99999"))
    result = hook.deliver("push", push("main", ["backend/app.py"], sha="d" * 40))
    assert result.status == "refused" and "port" in result.reason
    [status] = hook.gh.statuses[(REPO, "d" * 40)]
    assert (status["context"], status["state"]) == ("orchestra/push", "error")
    assert "problem(s) in the configuration" in status["description"]


def test_dev_mode_without_a_secret_accepts_unsigned_deliveries(settings: Settings, redis: Redis,
                                                               hello_repo: Path) -> None:
    with fake_github() as gh:
        dev = settings.with_(dev_mode=True, github_api_url=gh.url, github_token=gh.token, repos=(str(hello_repo),))
        with serve_in_thread(build_webhook_app(dev, redis=redis)) as url:
            status, answer = Hook(url, redis, gh).post("push", push("main", ["backend/app.py"]), secret="any")
    assert (status, answer["result"]) == (202, "accepted")


def _git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "PATH": os.environ["PATH"], "HOME": str(repo)}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_the_pushed_commit_is_what_the_run_checks_out(hook: Hook, hello_repo: Path, settings: Settings) -> None:
    from jobs.workspace import prepare

    _git(hello_repo, "init", "--quiet", "--initial-branch=main")
    shas = []
    for text in ("v1", "v2 (pushed)", "v3 (later)"):
        (hello_repo / "backend" / "app.py").write_text(f"VERSION = {text!r}\n")
        _git(hello_repo, "add", "-A")
        _git(hello_repo, "commit", "--quiet", "-m", text)
        shas.append(_git(hello_repo, "rev-parse", "HEAD"))
    result = hook.deliver("push", push("main", ["backend/app.py"], sha=shas[1]))
    run = RunStore(hook.redis).get(str(result.run_id))
    src, _ = prepare(run, settings, redis=hook.redis)
    assert (src / "backend" / "app.py").read_text() == "VERSION = 'v2 (pushed)'\n"


def test_an_unreachable_queue_asks_github_to_redeliver_later(settings: Settings, hello_repo: Path) -> None:
    gone = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    app = build_webhook_app(settings.with_(github_webhook_secret=SECRET, repos=(str(hello_repo),)), redis=gone)
    with serve_in_thread(app) as url:
        status, answer = Hook(url, gone, FakeGitHub()).post("push", push("main", ["backend/app.py"]))
    assert status == 503 and "redeliver" in answer["reason"]


def test_the_pushed_commit_cannot_choose_where_it_deploys(hook: Hook) -> None:
    at_commit = CONFIG.replace('branches: ["release/*"]', 'branches: ["feature/*"]').replace(
        "    branches: [main]", "    branches: [trunk]\n  development:\n    branches: [main]")
    hook.gh.contents[(REPO, "devops_orchestra.yaml", "e" * 40)] = at_commit
    sneaky = hook.deliver("push", push("feature/x", ["backend/app.py"], sha="e" * 40))
    assert sneaky == DeliveryOutcome("ignored", "branch 'feature/x' deploys to no environment")
    result = hook.deliver("push", push("main", ["backend/app.py"], sha="e" * 40))
    assert RunStore(hook.redis).get(str(result.run_id)).env == "staging"  # the served policy: main -> staging
    assert hook.gh.calls_to("GET", f"/repos/{REPO}/contents/devops_orchestra.yaml")[0].query == {"ref": "e" * 40}
    broken = hook.deliver("push", push("main", ["backend/app.py"], sha="f" * 40))
    assert broken.status == "started"  # no file at that commit: the served copy's configuration
    hook.gh.contents[(REPO, "devops_orchestra.yaml", "1" * 40)] = "project: [unclosed"
    invalid = hook.deliver("push", push("main", ["backend/app.py"], sha="1" * 40))
    assert invalid.status == "refused" and f"{REPO}@1111111/devops_orchestra.yaml:" in invalid.reason
