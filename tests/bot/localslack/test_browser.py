"""The local workspace's page in a real browser (Debian's chromium driven by Playwright).

A /deploy typed in the page's composer goes the real way: socket mode, the Bolt listener, dispatch,
an RQ job, a real `orchestra worker` running the analyze stage on a git checkout, the router, the
relay's thread. The build stage needs Docker, so this test's router walks a graph of analyze then
deploy (the graph is the router's parameter, as in tests/jobs/test_router.py): deploy is the gated
stage, so the router parks the run before it and the relay posts the approval request.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from redis import Redis
from slack_sdk import WebClient

from bot.localslack import Running
from jobs import approvals
from jobs.graph import ANALYZE, DEPLOY, Graph
from jobs.router import Router
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import RunStatus, RunStore
from tests.support.fake_anthropic import fake_anthropic
from tests.support.files import write_files
from tests.support.services import wait_for
from tests.support.slack_workspace import bot_in_thread, local_slack, orchestra_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ANALYZE_THEN_DEPLOY = Graph((ANALYZE, DEPLOY))
SLOW_MS = 60_000  # the worker's start and the analyze stage (ruff, bandit) on a loaded machine
RELAY_MS = 15_000  # the relay posts at most once a second per channel and coalesces parent updates

# The shop without its Friday-evening freeze (a test must not depend on the day): bob approves prod.
CONFIG = """\
project: {name: shop, language: python, framework: flask}
deployment:
  strategy: blue-green
  services:
    - {name: backend, path: backend, port: 5001}
    - {name: frontend, path: frontend, port: 5000, depends_on: [backend]}
environments:
  production:
    approval_required: true
    approvers: [U0ALICE, U0BOB]
    deployers: [U0ALICE, U0BOB]
  staging:
    approval_required: false
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        raise RuntimeError("chromium is not installed (apt-get install chromium chromium-driver, or scripts/setup)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    yield context.new_page()
    context.close()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The example shop as a git repository with a ``main`` branch, so ``/deploy backend main`` has a ref."""
    dest = tmp_path / "shop"
    shutil.copytree(PROJECT_ROOT / "examples" / "shop", dest,
                    ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".ruff_cache"))
    write_files(dest, {"devops_orchestra.yaml": CONFIG})
    git = ["git", "-c", "user.name=Shop Developer", "-c", "user.email=dev@shop.example", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "Shop"]):
        subprocess.run([*git, *args], cwd=dest, check=True, capture_output=True)
    return dest


@pytest.fixture
def world(redis: Redis, settings: Settings, repo: Path) -> Iterator[tuple[Running, Settings]]:
    """The workspace, the bot and a router (analyze → deploy) in this process, on the test's empty Redis."""
    with local_slack() as (running, control):
        bot_settings = settings.with_(slack_api_url=running.api_url, repos=(str(repo),))
        stop = threading.Event()
        router = Router(redis, bot_settings, graph=ANALYZE_THEN_DEPLOY, name="browser-test-router")
        thread = threading.Thread(target=router.run, args=(stop,), name="router", daemon=True)
        thread.start()
        try:
            with bot_in_thread(bot_settings, control):
                yield running, bot_settings
        finally:
            stop.set()
            thread.join(timeout=10)


def worker_env(settings: Settings) -> dict[str, str]:
    """What an `orchestra worker` needs to share this test's Redis and directories (and nothing else)."""
    path = f"{Path(sys.executable).parent}:{settings.tool_env.get('PATH', '/usr/bin:/bin')}"
    return {**settings.tool_env, "PATH": path, "REDIS_URL": settings.redis_url, "PYTHONUNBUFFERED": "1",
            "ORCHESTRA_WORKDIR": str(settings.workdir), "ORCHESTRA_CACHE_DIR": str(settings.cache)}


def keep(page: Page, path: Path) -> Path:
    """Screenshot the page into ``path``; also into $ORCHESTRA_TEST_ARTIFACTS when set."""
    page.screenshot(path=str(path))
    artifacts = os.environ.get("ORCHESTRA_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / path.name)
    return path


def as_user(page: Page, user: str) -> None:
    page.select_option("#user", user)
    expect(page.locator("#user")).to_have_value(user)


def test_a_deploy_is_approved_by_another_user_in_the_browser(
        world: tuple[Running, Settings], page: Page, redis: Redis, tmp_path: Path) -> None:
    running, settings = world
    shown = page.goto(f"{running.url}/")
    assert shown is not None and "script-src 'self'" in shown.headers["content-security-policy"]
    expect(page.locator("#user")).to_have_value("U0ALICE")

    page.fill("#text", "/deploy backend main prod")
    page.press("#text", "Enter")
    mine = page.locator("article.msg.ephemeral")
    expect(mine).to_contain_text(":rocket: Run", timeout=10_000)  # the ack came: the first job is queued
    expect(mine).to_contain_text("Only visible to you")
    runs: Any = wait_for(lambda: RunStore(redis).recent(), what="the run")
    run = runs[0]
    parent = page.locator("#messages > .entry > article.msg:not(.ephemeral)", has_text=run.id)
    expect(parent).to_contain_text("Deploy backend main → production", timeout=10_000)
    ts = parent.get_attribute("data-ts")
    assert ts is not None

    with orchestra_process(["worker", "--burst", "--no-router"], worker_env(settings),
                           tmp_path / "worker.log") as worker:
        expect(parent).to_contain_text("waiting for approval", timeout=SLOW_MS)
        assert worker.wait(timeout=30) == 0  # a burst worker leaves once the queue is empty: nobody runs deploy
    assert RunStore(redis).get(run.id).status == RunStatus.AWAITING_APPROVAL
    expect(parent).to_have_attribute("data-ts", ts)  # the same message, edited in place
    expect(parent).to_contain_text("(edited)")

    thread = page.locator(f'#messages > .entry[data-ts="{ts}"]')
    thread.locator("button.toggle").click()
    expect(thread.locator(".thread")).to_contain_text("Code analysis", timeout=RELAY_MS)
    asked = thread.locator(".thread article.msg", has_text="Approval needed")
    asked.get_by_role("button", name="Approve").click()  # alice asked: she may not approve
    refused = thread.locator(".thread article.msg.ephemeral")
    expect(refused).to_contain_text("you cannot approve your own request")
    ask = thread.locator(f'.thread article.msg[data-ts="{asked.get_attribute("data-ts")}"]')

    as_user(page, "U0BOB")
    expect(page.locator("article.msg.ephemeral")).to_have_count(0)  # alice's answers are hers alone
    expect(parent).to_contain_text("waiting for approval")
    ask.get_by_role("button", name="Approve").click()
    expect(thread.locator(".thread")).to_contain_text("Approved by @bob.", timeout=RELAY_MS)
    expect(ask.get_by_role("button")).to_have_count(0, timeout=RELAY_MS)  # the request, edited: no buttons
    expect(ask).to_contain_text("Approval for deploy of backend to production")
    assert approvals.get(redis, run.id).decided_by == "U0BOB"
    expect(parent).to_contain_text("running", timeout=RELAY_MS)  # the router resumed it: deploy is queued
    expect(parent).to_have_attribute("data-ts", ts)
    keep(page, tmp_path / "browser-approval.png")


def test_message_text_is_shown_as_text_and_mrkdwn(page: Page) -> None:
    with local_slack() as (running, control):
        bot = WebClient(token="xoxb-local", base_url=running.api_url)
        bot.chat_postMessage(channel="#devops-orchestra", text="fallback", blocks=[
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": "*Deploy* `v2` for <@U0BOB> <img src=x onerror=alert(1)>"}}])
        control.say("<b>hi</b> & <script>alert(1)</script>", user="U0DAVE")
        page.goto(f"{running.url}/?user=dave")
        messages = page.locator("#messages article.msg")
        expect(messages).to_have_count(2)
        first = messages.nth(0)
        expect(first.locator("strong")).to_have_text("Deploy")
        expect(first.locator("code")).to_have_text("v2")
        expect(first.locator(".mention")).to_have_text("@bob")
        expect(first).to_contain_text("<img src=x onerror=alert(1)>")
        expect(messages.nth(1)).to_contain_text("<b>hi</b> & <script>alert(1)</script>")
        assert page.locator("#messages img, #messages script, #messages b").count() == 0
        page.fill("#text", "thanks @bob")  # a person's name becomes a mention (the bot's would wait for a bot)
        page.press("#text", "Enter")
        expect(messages).to_have_count(3)
        assert control.transcript()[-1]["text"] == "thanks <@U0BOB>"


def test_yes_do_it_in_a_direct_message(settings: Settings, page: Page, redis: Redis) -> None:
    guess = {"intent": "deploy", "service": "frontend", "env": "staging", "confidence": 0.9}
    with fake_anthropic(api_key="sk-test") as model, local_slack() as (running, control):
        model.on_tool("record_intent_guess", lambda body: guess)
        bot_settings = model.client_settings(settings).with_(
            slack_api_url=running.api_url, repos=(str(PROJECT_ROOT / "examples" / "shop"),))
        with bot_in_thread(bot_settings, control, relay=False):
            page.goto(f"{running.url}/?channel=dm")
            page.fill("#text", "could you get the newest frontend out onto the staging boxes")
            page.press("#text", "Enter")
            ask = page.locator("#messages article.msg", has_text="Did you mean")
            expect(ask).to_contain_text("Did you mean: deploy frontend to staging?", timeout=RELAY_MS)
            ts = ask.get_attribute("data-ts")  # read before the click: the answer replaces the question's text
            ask.get_by_role("button", name="Yes, do it").click()
            runs: Any = wait_for(lambda: RunStore(redis).recent(), what="the run")
            run = runs[0]
            answer = page.locator(f'#messages article.msg[data-ts="{ts}"]')
            expect(answer).to_contain_text(f":rocket: Run {run.id} started", timeout=RELAY_MS)  # in place
            expect(answer.get_by_role("button")).to_have_count(0)
