"""The README's commands, run exactly as printed against a product started the way scripts/up starts it.

The commands are read from README.md: the code blocks of "The two commands" and the indented block of
"Trying it locally". Redis, dockerd, the registry and Prometheus come from the test fixtures (scripts/up
starts the same programs); the served repository is made by the command scripts/up runs
(`scripts/make-demo-repo --reuse`); the local Slack workspace, the bot and a worker run as processes.
Each command runs through bash from the repository root with `orchestra` on PATH, and the test checks
what it did: the thread says live, the page shows the hotfix, the faulty release was rolled back, the
answer gives the judge's reason. A command the test neither runs nor lists in NOT_RUN fails it.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from agents.deploy.targets.state import get_live
from agents.observability.live import targets_path
from bot.localslack.client import WorkspaceClient
from orchestra.config import load_config
from orchestra.settings import PROJECT_ROOT, Settings
from tests.support.docker_services import DockerEnv
from tests.support.prometheus import prometheus_server
from tests.support.services import wait_for
from tests.support.shop import SHOP_DIR
from tests.support.slack_workspace import bot_process, local_slack, orchestra_process, process_env, thread_of

README = PROJECT_ROOT / "README.md"
NOT_RUN = {  # a README command -> why the test cannot run it as printed
    "scripts/up": "it installs packages and runs every service in the foreground until Ctrl-C; the test starts "
                  "the same programs (fixtures) and runs the one command of its own that matters here, "
                  "scripts/make-demo-repo --reuse",
    "scripts/test": "it is the suite this test belongs to",
    "orchestra say --click 1795240357.000012:Approve --user bob": "the timestamp is an example; the test runs the "
                                                                  "same command with the real button's timestamp",
}
FINISHED = (":white_check_mark: Run", ":x: Run", ":no_entry_sign: Run", ":octagonal_sign: Run")


def readme_commands(text: str) -> list[str]:
    """The command lines of "The two commands" (fenced blocks) and of "Trying it locally" (indented block)."""
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    lines = [line for block in re.findall(r"```sh\n(.*?)```", section, re.S) for line in block.splitlines()]
    trying = text.split("**Trying it locally.**", 1)[1]
    lines += re.search(r"\n\n((?: {4}.*\n)+)", trying).group(1).splitlines()  # type: ignore[union-attr]
    return [line.strip() for line in lines if line.strip()]


def bare(command: str) -> str:
    """The command without its comment, words re-joined (how NOT_RUN names it)."""
    return shlex.join(shlex.split(command, comments=True))


def test_the_readme_lists_the_commands_this_test_knows() -> None:
    commands = [bare(c) for c in readme_commands(README.read_text())]
    assert commands[:2] == ["scripts/up", "scripts/test"]
    assert ".venv/bin/orchestra demo" in commands and any(c.startswith("orchestra say --click") for c in commands)
    assert set(NOT_RUN) <= set(commands), "NOT_RUN names a command the README no longer prints"


class Shell:
    """Runs README lines verbatim through bash, and remembers which ones ran."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.ran: set[str] = set()

    def __call__(self, line: str, *, expect_rc: int = 0, timeout: float = 900) -> str:
        started = time.monotonic()
        result = subprocess.run(["bash", "-c", line], cwd=PROJECT_ROOT, env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        output = result.stdout + result.stderr
        print(f"$ {line}  ({time.monotonic() - started:.0f}s, exit {result.returncode})\n{output}")  # -s shows it
        assert result.returncode == expect_rc, f"{line}\n-> exit {result.returncode}\n{output[-4000:]}"
        self.ran.add(bare(line))
        return output


def page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


def served(port: int) -> float:
    """Application requests a release container has answered, from its own /metrics."""
    text = page(f"http://127.0.0.1:{port}/metrics")
    return sum(float(v) for v in re.findall(r"^http_requests_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))


def finished(slack: WorkspaceClient, run_id: str) -> list[str]:
    def texts() -> list[str] | None:
        replies = [r["text"] for r in (thread_of(slack, run_id) or {}).get("replies", [])]
        return replies if replies and replies[-1].startswith(FINISHED) else None
    found: Any = wait_for(texts, timeout=900, interval=0.5, what=f"run {run_id} finishing")
    return list(found)


def run_id_in(output: str) -> str:
    found = re.search(r":rocket: Run `(r-\d{8}-[0-9a-f]{6})` started", output)
    assert found, output
    return found.group(1)


@pytest.mark.docker
@pytest.mark.slow
def test_every_readme_command_works_as_printed(redis_url: str, docker_env: DockerEnv, tmp_path: Path) -> None:
    if load_config(SHOP_DIR).environment("production").frozen() is not None:
        pytest.skip("production is frozen now (the example's Friday-evening window): the story's production "
                    "steps would be refused, as the README says")
    commands = {bare(c): c for c in readme_commands(README.read_text())}
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    served_repo = tmp_path / "state" / "shop"
    made = subprocess.run([str(PROJECT_ROOT / "scripts" / "make-demo-repo"), "--reuse", str(served_repo)],
                          capture_output=True, text=True, check=True)  # as scripts/up does at first start
    assert "ready at" in made.stdout
    settings = Settings(redis_url=redis_url, workdir=tmp_path / "work", repos=(str(served_repo),))
    home = tmp_path / "home"
    home.mkdir()
    with docker_env.connected(stop_deployed_in=settings.workdir), local_slack() as (running, slack), \
            prometheus_server(targets_file=targets_path(settings.workdir)) as prom:
        env = process_env(settings, running.api_url, ORCHESTRA_CACHE_DIR=str(tmp_path / "cache"),
                          ORCHESTRA_PROMETHEUS_URL=prom.url, DOCKER_HOST=docker_env.url,
                          ORCHESTRA_REGISTRY=docker_env.registry, ORCHESTRA_BASE_IMAGE=docker_env.base_image,
                          ORCHESTRA_BUILD_CA_BUNDLE="/etc/ssl/certs/ca-certificates.crt",
                          ORCHESTRA_SANDBOX="docker")  # as under scripts/up: services' tests run in a box
        sh = Shell({**env, "HOME": str(home), "PATH": f"{PROJECT_ROOT / '.venv' / 'bin'}:{env['PATH']}"})
        with bot_process(settings, slack, running.api_url, tmp_path / "bot.log"), \
                orchestra_process(["worker"], env, tmp_path / "worker.log"):
            the_story(sh, commands, slack, redis)  # in the README's order
            pipeline_from_the_terminal(sh, commands, home, redis)
            trying_it_locally(sh, commands, slack)
    redis.close()
    missing = set(commands) - sh.ran - set(NOT_RUN)
    assert not missing, f"README commands this test neither runs nor lists in NOT_RUN: {sorted(missing)}"


def command(commands: dict[str, str], start: str, *also: str) -> str:
    """The README line that starts with ``start`` (and contains each of ``also``), as printed."""
    found = [line for key, line in commands.items() if key.startswith(start) and all(a in line for a in also)]
    assert len(found) == 1, (start, also, found)
    return found[0]


def pipeline_from_the_terminal(sh: Callable[..., str], commands: dict[str, str], home: Path,
                               redis: Redis) -> None:
    out = sh(command(commands, "scripts/make-demo-repo"))
    assert (home / "shop" / ".git").is_dir() and "release/faulty" in out
    out = sh(command(commands, ".venv/bin/orchestra run", "--ref main", "--validate-only"))
    assert "code_analysis_result" in out and "test_results" in out
    out = sh(command(commands, ".venv/bin/orchestra run", "demo/lint-error"), expect_rc=1)
    assert "FAILED" in out and "backend/discounts.py:4" in out  # the first error, with file:line
    out = sh(command(commands, ".venv/bin/orchestra run", "--env staging"))
    assert "deployment_succeeded" in out and "observation_passed" in out
    staging = get_live(redis, "frontend", "staging")
    assert staging is not None and "<h1>Shop</h1>\n<ul>" in page(staging.url + "/")  # main: no notice


def the_story(sh: Callable[..., str], commands: dict[str, str], slack: WorkspaceClient, redis: Redis) -> None:
    out = sh(command(commands, ".venv/bin/orchestra say", "/deploy frontend hotfix-v2"))
    replies = finished(slack, run_id_in(out))
    also = "Also deploying backend first: frontend depends on it and it is not running in staging"
    assert any(also in m["text"] for m in slack.transcript("devops-orchestra"))
    assert replies[-1].startswith(":white_check_mark: Run succeeded"), replies
    assert any(r.startswith(":white_check_mark: Deployed") for r in replies), replies
    frontend = get_live(redis, "frontend", "staging")
    assert frontend is not None and frontend.current is not None and frontend.current.ref == "hotfix-v2"
    assert "Free delivery on orders over 30.00" in page(frontend.url + "/")  # backend came along: items listed
    assert served(frontend.current.port) > 20  # the demo traffic reached the release (5/s while deploying, watching)

    out = sh(command(commands, ".venv/bin/orchestra say", "what's running in staging?"))
    assert re.search(r"backend in staging: [0-9a-f]{7} \(hotfix-v2\)", out), out
    assert re.search(r"frontend in staging: [0-9a-f]{7} \(hotfix-v2\)", out), out

    out = sh(command(commands, ".venv/bin/orchestra demo"))
    assert "Approve" in out and "Approved by <@U0BOB>" in out
    assert ":leftwards_arrow_with_hook: Rolled back frontend" in out and "error_rate" in out, out[-4000:]
    prod = get_live(redis, "frontend", "production")
    assert prod is not None and prod.current is not None and prod.current.ref == "hotfix-v2"  # back on the hotfix
    assert prod.weights == {prod.current.version: 100}

    out = sh(command(commands, ".venv/bin/orchestra say", "--channel dm"))
    answer = out.rsplit("why did prod roll back?", 1)[-1]  # `say` prints the transcript: the last answer
    assert "error" in answer and "frontend" in answer, out[-3000:]


def trying_it_locally(sh: Callable[..., str], commands: dict[str, str], slack: WorkspaceClient) -> None:
    out = sh(command(commands, "orchestra say", "/deploy backend hotfix-v2 to prod"))
    run_id = run_id_in(out)
    ask: Any = wait_for(lambda: [r for r in (thread_of(slack, run_id) or {}).get("replies", []) if r["buttons"]],
                        timeout=300, interval=0.5, what="the approval request")
    sh(command(commands, "orchestra say", "what's running in staging?"))
    printed = command(commands, "orchestra say --click")
    assert bare(printed) in NOT_RUN
    out = sh(printed.replace("1795240357.000012", ask[0]["ts"]))
    assert "Approved by <@U0BOB>" in out
    assert finished(slack, run_id)[-1].startswith(":white_check_mark: Run succeeded")
