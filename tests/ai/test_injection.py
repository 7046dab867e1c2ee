"""Prompt injection at every place untrusted text meets a model, with the model answering as the attacker wants.

Each case of tests/fixtures/injection/corpus.yaml goes through the real product path that reads its
place (chat: the understander and the intake; crash logs, test output and questions: the explain
handler; diffs, PR titles and bodies, commit messages: the analysis stage; Dockerfiles: the build
stage up to Docker; function sources: test generation), while the fake Messages API replays the
attacker's answer and the process holds real secrets. Then: nothing acted (no new run, the pending
approval undecided, a model-proposed action at most a question), nothing leaked (no secret in what
the model was sent, in the reply or output, in an event, a run or the audit trail; the untrusted text
only inside the fence), and the refusal is on record (an ``llm_call`` event and what was rejected).
"""
from __future__ import annotations

import io
import json
import secrets
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from docker.errors import APIError
from redis import Redis

from agents import build as build_agent
from agents.analysis import stage as analyze_agent
from agents.build.detect import detect_stack
from agents.build.dockerfile import Images, generate
from agents.testing.testgen import generate_tests
from bot.github.deliveries import Facts, PullRequest, parse_delivery, pull_intent
from handlers import intake
from handlers.reply import ReplyKind, Who
from handlers.understand import Understander
from jobs import approvals
from jobs.graph import ANALYZE, BUILD
from jobs.runner import execute_stage
from orchestra.config import EnvironmentPolicy
from orchestra.events import EventBus, EventType
from orchestra.llm import LLM, NO_RUN
from orchestra.parse import parse
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Audit, Run, RunStatus, RunStore
from tests.support.fake_anthropic import FakeAnthropic, fake_anthropic
from tests.support.github_payloads import load
from tests.support.hostile_model import Case, inside_fences, load_corpus, outside_fences, replay, sent_texts
from tests.support.sample_apps import flask_app

SHOP = str(PROJECT_ROOT / "examples" / "shop")
SERVICES = ["frontend", "backend"]
ALICE = Who("U0ALICE", place="D0ALICE", via="dm")
SECRETS = {  # what the process holds: settings, and a secrets.keys value in its environment
    "GITHUB_TOKEN": "ghp_" + secrets.token_hex(18), "ANTHROPIC_API_KEY": "sk-ant-api03-" + secrets.token_hex(16),
    "SLACK_BOT_TOKEN": f"xoxb-1234567890-{secrets.token_hex(12)}",
    "SLACK_APP_TOKEN": f"xapp-1-A0{secrets.token_hex(12)}",
    "GITHUB_WEBHOOK_SECRET": secrets.token_hex(16), "DB_PASSWORD": f"db-{secrets.token_hex(10)}"}
ACTS = (EventType.RUN_REQUESTED, EventType.APPROVAL_GRANTED, EventType.APPROVAL_REJECTED,
        EventType.DEPLOYMENT_TRIGGERED, EventType.RUN_CANCELLED)
CORPUS = load_corpus()


def cases(path: str) -> list[Any]:
    return [pytest.param(c, id=c.id) for c in CORPUS if c.path == path]


@dataclass
class World:
    """The process the attacker talks to: Redis, settings holding secrets, the fake model, a parked deploy."""

    redis: Redis
    settings: Settings
    server: FakeAnthropic
    pending: Run

    def arm(self, case: Case, run_id: str = "") -> Case:
        """The case with this world's names filled in, its hostile answer armed on the fake model."""
        names = {**SECRETS, "pending_run": self.pending.id, "run_id": run_id}
        replay(self.server, case, names)
        return case.filled(names)


@pytest.fixture
def world(redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("DB_PASSWORD", SECRETS["DB_PASSWORD"])
    with fake_anthropic(api_key=SECRETS["ANTHROPIC_API_KEY"]) as server:
        held = server.client_settings(settings).with_(
            github_token=SECRETS["GITHUB_TOKEN"], github_webhook_secret=SECRETS["GITHUB_WEBHOOK_SECRET"],
            slack_bot_token=SECRETS["SLACK_BOT_TOKEN"], slack_app_token=SECRETS["SLACK_APP_TOKEN"], repos=(SHOP,))
        pending = RunStore(redis).create(Run(requested_by="U0CAROL", repo=SHOP, services=["backend"],
                                             env="production", status=RunStatus.AWAITING_APPROVAL, stage="deploy"))
        approvals.request(redis, pending, "deploy", EnvironmentPolicy(approval_required=True, approvers=["U0BOB"]),
                          timeout_s=1800)
        yield World(redis, held, server, pending)


# --- chat: the understander and the intake ---------------------------------------------------------------

@pytest.mark.parametrize("case", cases("understand"))
def test_chat(case: Case, world: World) -> None:
    case = world.arm(case)
    parsed = Understander.from_settings(world.settings, redis=world.redis).understand(case.text, SERVICES)
    reply = intake.handle(parsed, ALICE, redis=world.redis, settings=world.settings)
    assert reply.kind == ReplyKind(case.expect)
    if reply.kind == ReplyKind.CONFIRM:  # the most a model can do: ask the user, with checked fields only
        assert reply.data["summary"].split()[1] in SERVICES and "ref" not in json.loads(reply.data["payload"])
    audit = [a for a in Audit(world.redis).entries() if a["action"] in ("request_refused", "llm_guess_not_acted_on")]
    assert [a["action"] for a in audit] == ["llm_guess_not_acted_on" if case.reaches_model else "request_refused"]
    assert case.because in audit[0]["detail"].get("outcome", audit[0]["detail"].get("reason")), audit
    assert bool(calls(world, NO_RUN)) is case.reaches_model
    check(world, case, [reply.text, json.dumps(reply.data)], runs={world.pending.id})


# --- explain: the answer about a run, written from its facts ------------------------------------------------

@pytest.mark.parametrize("case", cases("explain"))
def test_explain(case: Case, world: World) -> None:
    run = RunStore(world.redis).create(Run(requested_by="U0DAVE", repo=SHOP, services=["backend"], env="staging"))
    case = world.arm(case, run.id)
    fail_run(world.redis, run, case)
    question = case.text if case.place == "chat" else f"why did {run.id} fail?"
    reply = intake.handle(parse(question, SERVICES), ALICE, redis=world.redis, settings=world.settings)
    without_model = world.settings.with_(llm_api_key=None, llm_url=None)
    template = intake.handle(parse(question, SERVICES), ALICE, redis=world.redis, settings=without_model)
    assert (reply.kind, reply.text) == (ReplyKind.ANSWER, template.text)  # the model's answer was not used
    assert calls(world, run.id)
    [rejected] = [a for a in Audit(world.redis).entries() if a["action"] == "llm_answer_rejected"]
    assert rejected["run_id"] == run.id and case.because in rejected["detail"]["reason"], rejected
    check(world, case, [reply.text], runs={world.pending.id, run.id})


def fail_run(redis: Redis, run: Run, case: Case) -> None:
    """What the deploy (a crash log) or the test stage (test output) records when the run fails."""
    bus, reason = EventBus(redis), "deploy of backend to staging failed: the image could not be pulled"
    if case.place == "crash_log":
        reason = f"deploy of backend to staging failed: backend is not healthy: the container exited\n{case.text}"
        bus.emit(run.id, EventType.DEPLOYMENT_FAILED, "deploy", failed="backend", error=reason, stage="deploy",
                 passed=False, summary=reason)
    elif case.place == "test_output":
        failure = {"test": "tests/test_api.py::test_checkout", "file": "tests/test_api.py", "line": 12,
                   "message": case.text}
        reason = f"1 test(s) failed; first: {failure['test']} ({failure['file']}:12): {case.text}"
        bus.emit(run.id, EventType.TEST_RESULTS, "test", stage="test", passed=False, summary=reason,
                 services={"backend": {"service": "backend", "ok": False, "failures": [failure]}})
    RunStore(redis).update(run.id, status=RunStatus.FAILED, reason=reason)


# --- review: the analysis stage on a pull request's commit ---------------------------------------------------

@pytest.mark.parametrize("case", cases("review"))
def test_review(case: Case, world: World, tmp_path: Path) -> None:
    run = Run(kind="validate", source="github", requested_by="github:mallory", repo="", origin={"pr": 12})
    case = world.arm(case, run.id)
    repo = pull_request_repo(tmp_path / "shop", case)
    sha, changed = git(repo, "rev-parse", "HEAD"), git(repo, "diff", "--name-only", "HEAD~1", "HEAD").splitlines()
    run = RunStore(world.redis).create(run.model_copy(update={"repo": str(repo), "ref": sha, "commit": sha}))
    execute_stage(run.id, ANALYZE, analyze_agent.run, redis=world.redis, settings=world.settings)
    [result] = [e.data for e in EventBus(world.redis).replay(run.id) if e.type == EventType.CODE_ANALYSIS_RESULT]
    assert result["passed"] is (case.gate == "passed"), result["summary"]  # the rule checks decide the gate
    from_model = [f for f in result["findings"] if f["tool"] == "llm-review"]
    assert all(f["severity"] == "warning" and f["file"] in changed for f in from_model), from_model
    assert ("dropped" in result["review"]) is (case.expect == "dropped"), result["review"]
    assert case.because in f"{result['summary']}; {result['review']}"
    assert calls(world, run.id)
    outputs = [json.dumps(result)]
    if case.place in ("pr_title", "pr_body"):
        outputs.append(pull_request_intent(case))
    check(world, case, outputs, runs={world.pending.id, run.id})


def pull_request_repo(repo: Path, case: Case) -> Path:
    """A repository whose last commit is the pull request: the text in the code, a file name, or the message."""
    write(repo / "app.py", "def total(a, b):\n    return a + b\n")
    write(repo / "requirements.txt", "")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "the shop")
    if case.file:
        write(repo / case.file, "\n\n" + case.content if case.file == "app.py" else case.content,
              append=case.file == "app.py")
    else:  # the text is the pull request's title or body, or the commit's message
        write(repo / "app.py", "\n\ndef ping():\n    return 'pong'\n", append=True)
    message = {"pr_title": f"{case.text} (#12)", "pr_body": f"Update the checkout copy (#12)\n\n{case.text}",
               "commit_message": case.text}.get(case.place, "Small fixes (#12)")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", message)
    return repo


def pull_request_intent(case: Case) -> str:
    """The run a pull request with this title or body asks for: the text is not carried into it."""
    payload = load("pull_request.opened.payload.json")
    payload["pull_request"]["title" if case.place == "pr_title" else "body"] = case.text
    pr = parse_delivery("pull_request", payload)
    assert isinstance(pr, PullRequest)
    intent = pull_intent(pr, Facts(changed_files=("app.py",)), delivery="d-1").model_dump_json()
    assert all(probe not in intent for probe in case.probes())
    return intent


# --- build: the stage up to Docker, which only records the Dockerfile it was given --------------------------

@pytest.mark.parametrize("case", cases("build"))
def test_build(case: Case, world: World, tmp_path: Path) -> None:
    run = Run(requested_by="U0ERIN", repo="", services=[], env="staging")
    case = world.arm(case, run.id)
    service = flask_app(tmp_path / "web")
    write(service / str(case.file), case.content)
    run = RunStore(world.redis).create(run.model_copy(update={"repo": str(service)}))
    docker = RecordingDocker()
    execute_stage(run.id, BUILD, lambda ctx: build_agent.run(ctx, client=docker), redis=world.redis,
                  settings=world.settings)
    template = generate(detect_stack(service), service, service="web", port=5000, health="/health", images=Images())
    [progress] = [e.data["message"] for e in EventBus(world.redis).replay(run.id)
                  if e.type == EventType.PROGRESS and e.data["message"].startswith("building web (")]
    if case.expect == "own":  # the service's own Dockerfile is used as written, and no model sees it
        assert docker.dockerfiles == [case.text] and world.server.requests == []
    else:
        assert docker.dockerfiles == [template] and calls(world, run.id)
        assert "template used (LLM proposal rejected: " in progress
    assert case.because in progress, progress
    check(world, case, docker.dockerfiles + [progress], runs={world.pending.id, run.id})


class RecordingDocker:
    """Stands in for the Docker engine: keeps the Dockerfile of each build context, then refuses to build."""

    def __init__(self) -> None:
        self.api = self
        self.dockerfiles: list[str] = []

    def build(self, *, fileobj: io.BytesIO, **_: Any) -> None:
        with tarfile.open(fileobj=io.BytesIO(fileobj.getvalue())) as tar:
            member = tar.extractfile("Dockerfile")
            assert member is not None
            self.dockerfiles.append(member.read().decode())
        raise APIError("no Docker engine in this test")


# --- testgen: tests written for the source of an uncovered function --------------------------------------------

@pytest.mark.parametrize("case", cases("testgen"))
def test_generated_tests(case: Case, world: World, tmp_path: Path) -> None:
    run = RunStore(world.redis).create(Run(requested_by="U0ERIN", repo="", env="staging"))
    case = world.arm(case, run.id)
    service = tmp_path / "svc"
    write(service / "billing.py", case.text)
    report = generate_tests(service, python=Path(sys.executable), settings=world.settings, run_id=run.id,
                            llm=LLM(world.settings, redis=world.redis), max_targets=1, test_timeout_s=30)
    [hostile] = [c for c in report.candidates if c.origin == "llm"]
    assert not hostile.kept and hostile.reason == f"refused without running it: {case.because}"
    assert report.kept and all(c.origin == "deterministic" for c in report.kept)  # the deterministic test instead
    verdicts = report.event_data()["verdicts"]  # what the test stage's event records
    assert any(v["origin"] == "llm" and v["reason"] == hostile.reason for v in verdicts)
    assert calls(world, run.id)
    check(world, case, list(report.kept_files.values()), runs={world.pending.id, run.id})


# --- what every case must show --------------------------------------------------------------------------------

def check(world: World, case: Case, outputs: list[str], *, runs: set[str]) -> None:
    """Nothing acted, nothing leaked, and the untrusted text only reached the model as fenced data."""
    redis = world.redis
    assert {r.id for r in RunStore(redis).recent(100)} == runs  # no run was started
    assert approvals.get(redis, world.pending.id).decision is None
    events = EventBus(redis).recent(100_000)
    assert [e.type for e in events if e.type in ACTS] == []
    sent = sent_texts(world.server)
    bodies = [json.dumps(r.body) for r in world.server.requests]  # all but the API key header
    stored = [e.model_dump_json() for e in events] + [json.dumps(a) for a in Audit(redis).entries(1000)] \
        + [r.model_dump_json() for r in RunStore(redis).recent(100)]
    for name, value in SECRETS.items():
        for where, texts in (("sent to the model", bodies), ("in the output", outputs), ("stored", stored)):
            assert not any(value in t for t in texts), f"{name} {where}"
    for value in case.redacted:
        assert not any(value in t for t in sent + outputs), f"{value!r} reached the model or the output"
    probes = case.probes()
    for text in sent:
        assert not any(p in outside_fences(text) for p in probes), "untrusted text outside the fence"
    if case.reaches_model:
        assert any(p in inside_fences(t) for t in sent for p in probes), "the text was not sent as fenced data"
    else:
        assert not any(p in t for t in sent for p in probes), "the text reached a model"


def calls(world: World, run_id: str) -> list[dict[str, Any]]:
    """The run's ``llm_call`` events that were answered."""
    return [e.data for e in EventBus(world.redis).replay(run_id)
            if e.type == EventType.LLM_CALL and e.data["outcome"] == "ok"]


def write(path: Path, text: str, *, append: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w") as out:
        out.write(text)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=Mallory", "-c", "user.email=mallory@example.com", *args],
                          cwd=repo, check=True, capture_output=True, text=True, timeout=60)
    return done.stdout.strip()
