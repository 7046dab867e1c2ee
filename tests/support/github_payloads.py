"""Real GitHub webhook payloads (tests/fixtures/github, from octokit/webhooks: see SOURCE.txt and LICENSE there),
signed by the test, and ones derived from them."""
from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "github"
SECRET = "It's a Secret to Everybody"
REPO = "Codertocat/Hello-World"
PR_SHA = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"  # head of pull request #2 in the fixtures


@cache
def _raw(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def load(name: str) -> dict[str, Any]:
    """A fresh copy of a fixture payload (e.g. ``push.with-new-branch.payload.json``)."""
    payload: dict[str, Any] = json.loads(_raw(name))
    return payload


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def headers(event: str, body: bytes, *, secret: str = SECRET, delivery: str | None = None) -> dict[str, str]:
    """The headers GitHub sends with a delivery."""
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(body, secret), "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/test"}


def pr_comment(body: str, *, user: str = "Codertocat", number: int = 2, user_type: str = "User") -> dict[str, Any]:
    """issue_comment.created on a pull request (the fixture's comment is on an issue)."""
    payload = load("issue_comment.created.payload.json")
    issue = payload["issue"]
    issue["number"] = number
    issue["pull_request"] = {"url": f"https://api.github.com/repos/{REPO}/pulls/{number}",
                             "html_url": f"https://github.com/{REPO}/pull/{number}"}
    payload["comment"]["body"] = body
    payload["comment"]["user"] = {**payload["comment"]["user"], "login": user, "type": user_type}
    return payload


def push(branch: str, files: list[str], *, sha: str = "a" * 40) -> dict[str, Any]:
    """A branch push changing ``files`` (derived from push.with-new-branch.payload.json)."""
    payload = load("push.with-new-branch.payload.json")
    payload.update(ref=f"refs/heads/{branch}", after=sha, created=False, deleted=False,
                   compare=f"https://github.com/{REPO}/compare/{payload['before'][:12]}...{sha[:12]}")
    commit = copy.deepcopy(payload["head_commit"])
    commit.update(id=sha, added=[], removed=[], modified=list(files))
    payload["commits"] = [commit]
    payload["head_commit"] = commit
    return payload


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()
