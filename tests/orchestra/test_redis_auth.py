"""Redis is not open: the product refuses a Redis anybody may use, and each process needs only its ACL.

Every server here is a real redis-server on loopback; the ACL users are made with ACL SETUSER.
"""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from orchestra.errors import OrchestraError
from orchestra.redisconn import PROCESS_ACLS, Acl, acl_setuser, check_acl, connect, public_url
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import RunStatus, RunStore
from tests.support.fake_github import fake_github
from tests.support.github_payloads import PR_SHA, REPO, SECRET, body_of, headers, load
from tests.support.services import free_port, port_open, redis_server, wait_for
from tests.support.slack_workspace import bot_process, local_slack, orchestra_process, process_env, thread_of


@pytest.fixture(scope="module")
def open_redis() -> Iterator[str]:
    """A redis-server whose default user needs no password, as Debian's package starts it."""
    with redis_server(password=False) as url:
        yield url


def user_url(admin_url: str, user: str, password: str) -> str:
    """``admin_url`` (redis://:SECRET@HOST:PORT/DB) as ``user`` with ``password``."""
    return f"redis://{user}:{password}@{admin_url.rpartition('@')[2]}"


def test_an_open_redis_is_refused_with_the_way_to_secure_it_unless_in_dev_mode(open_redis: str) -> None:
    with pytest.raises(OrchestraError) as refused:
        connect(open_redis)

    assert "serves clients that send no password" in refused.value.message
    assert "requirepass" in str(refused.value.hint) and "REDIS_URL" in str(refused.value.hint)
    assert "ORCHESTRA_DEV=1" in str(refused.value.hint)
    assert connect(open_redis, dev_mode=True).ping()


def test_credentials_for_an_acl_user_do_not_hide_a_default_user_without_password(open_redis: str) -> None:
    admin = Redis.from_url(open_redis)
    admin.execute_command("ACL", "SETUSER", *acl_setuser("bot", "bot-open", "pw-bot"))
    try:
        with pytest.raises(OrchestraError, match="serves clients that send no password"):
            connect(f"redis://bot-open:pw-bot@{open_redis.removeprefix('redis://')}", role="bot")
    finally:
        admin.execute_command("ACL", "DELUSER", "bot-open")


def test_a_default_user_without_password_counts_as_open_even_with_its_commands_cut(redis_url: str,
                                                                                   redis: Redis) -> None:
    """``default on nopass -@all +get ~*``: PING is refused, but a stranger still reads every key."""
    redis.execute_command("ACL", "SETUSER", "keeper", "on", ">keeper-pw", "+@all", "~*", "&*")
    keeper = Redis.from_url(user_url(redis_url, "keeper", "keeper-pw"))
    secret = redis_url.split(":")[2].split("@")[0]
    try:
        keeper.execute_command("ACL", "SETUSER", "default", "on", "nopass", "-@all", "+get", "~*")
        with pytest.raises(OrchestraError, match="serves clients that send no password"):
            connect(user_url(redis_url, "keeper", "keeper-pw"))
    finally:
        keeper.execute_command("ACL", "SETUSER", "default", "on", "resetpass", f">{secret}", "+@all", "~*", "&*")
        keeper.execute_command("ACL", "DELUSER", "keeper")
    assert connect(redis_url).ping()  # back to a password: accepted


def test_a_wrong_or_missing_password_is_named_without_showing_it(redis_url: str) -> None:
    server = redis_url.rpartition("@")[2]
    with pytest.raises(OrchestraError) as wrong:
        connect(f"redis://:not-the-password@{server}")
    with pytest.raises(OrchestraError) as missing:
        connect(f"redis://{server}")

    assert "refused the credentials" in wrong.value.message and "not-the-password" not in str(wrong.value)
    assert "redis://:***@" in wrong.value.message
    assert "wants a password" in str(missing.value.hint)
    assert public_url("redis://bot:s3cret@h:1/0") == "redis://bot:***@h:1/0"


def test_an_unreachable_redis_says_how_to_start_one() -> None:
    with pytest.raises(OrchestraError) as unreachable:
        connect(f"redis://:pw@127.0.0.1:{free_port()}/0")
    assert "cannot reach Redis" in unreachable.value.message and "scripts/up" in str(unreachable.value.hint)


# The entry points

def _orchestra(args: list[str], redis_url: str, tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRA_", "SLACK_", "GITHUB_", "REDIS_"))}
    env.update(REDIS_URL=redis_url, ORCHESTRA_WORKDIR=str(tmp_path / "work"), SLACK_BOT_TOKEN="xoxb-local",
               SLACK_APP_TOKEN="xapp-local", SLACK_API_URL=f"http://127.0.0.1:{free_port()}/api/",
               GITHUB_WEBHOOK_SECRET="s", ORCHESTRA_METRICS_PORT=str(free_port()), **extra)
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args", [["bot"], ["worker", "--burst"], ["webhooks", "--port", "0"],
                                  ["run", "--repo", str(PROJECT_ROOT / "examples" / "shop")], ["up"]],
                         ids=lambda a: a[0])
def test_every_entry_point_refuses_to_start_on_an_open_redis(args: list[str], open_redis: str,
                                                             tmp_path: Path) -> None:
    result = _orchestra(args, open_redis, tmp_path)
    assert result.returncode == 1
    assert "serves clients that send no password" in result.stderr and "requirepass" in result.stderr


def test_dev_mode_lets_a_worker_use_an_open_redis(open_redis: str, tmp_path: Path) -> None:
    result = _orchestra(["worker", "--burst"], open_redis, tmp_path, ORCHESTRA_DEV="1")
    assert result.returncode == 0, result.stderr


# The ACL of each process

@pytest.mark.parametrize("role", sorted(PROCESS_ACLS))
def test_each_process_acl_passes_its_check_without_writing_anything(role: str, redis_url: str, redis: Redis) -> None:
    redis.execute_command("ACL", "SETUSER", *acl_setuser(role, f"{role}-ok", "pw"))
    check_acl(Redis.from_url(user_url(redis_url, f"{role}-ok", "pw")), role)
    assert redis.dbsize() == 0 and redis.pubsub_numsub("rq:pubsub:probe") == [(b"rq:pubsub:probe", 0)]


def _without(acl: Acl, rule: str) -> list[str]:
    return [r for r in acl.rules() if r != rule]


@pytest.mark.parametrize("role,rule", [(role, rule) for role, acl in sorted(PROCESS_ACLS.items())
                                       for rule in acl.rules() if rule[0] in "~&+"])
def test_a_user_missing_any_one_rule_of_its_process_is_refused_by_name(role: str, rule: str, redis_url: str,
                                                                        redis: Redis) -> None:
    user = f"{role}-short"
    redis.execute_command("ACL", "SETUSER", user, "reset", "on", ">pw", *_without(PROCESS_ACLS[role], rule))
    with pytest.raises(OrchestraError) as refused:
        check_acl(Redis.from_url(user_url(redis_url, user, "pw")), role)
    assert f"lacks permissions the {role} needs" in refused.value.message
    assert "README" in str(refused.value.hint)


# Each real process, as a Redis user with exactly its ACL

def test_bot_worker_and_webhooks_each_serve_a_run_with_exactly_their_acl(redis_url: str, redis: Redis,
                                                                         tmp_path: Path) -> None:
    """A Slack deploy stopped by analysis and a pull request's validation, through the three processes."""
    repo, pr_repo = tmp_path / "shop", tmp_path / "Codertocat" / "Hello-World"  # served as owner/name
    subprocess.run([str(PROJECT_ROOT / "scripts" / "make-demo-repo"), str(repo)], check=True, capture_output=True)
    (pr_repo / "backend").mkdir(parents=True)
    (pr_repo / "devops_orchestra.yaml").write_text(
        "project:\n  name: hello\ndeployment:\n  services:\n    - name: backend\n      path: backend\n")
    urls = {}
    for role in PROCESS_ACLS:
        redis.execute_command("ACL", "SETUSER", *acl_setuser(role, role, f"pw-{role}"))
        urls[role] = user_url(redis_url, role, f"pw-{role}")
    redis.execute_command("ACL", "LOG", "RESET")
    base = Settings(workdir=tmp_path / "work", repos=(str(repo), str(pr_repo)))
    port = free_port()
    with local_slack() as (running, slack), fake_github() as gh:
        gh.add_pull(REPO, 2, sha=PR_SHA, files=["backend/app.py"])
        env = {role: process_env(base.with_(redis_url=url), running.api_url,
                                 ORCHESTRA_CACHE_DIR=str(tmp_path / "cache"), ORCHESTRA_METRICS_PORT=str(free_port()),
                                 GITHUB_WEBHOOK_SECRET=SECRET,
                                 GITHUB_TOKEN=str(gh.token), GITHUB_API_URL=gh.url)
               for role, url in urls.items()}
        with bot_process(base.with_(redis_url=urls["bot"]), slack, running.api_url, tmp_path / "bot.log"), \
                orchestra_process(["worker"], env["worker"], tmp_path / "worker.log"), \
                orchestra_process(["webhooks", "--port", str(port)], env["webhooks"], tmp_path / "webhooks.log"):
            slack.command("/deploy backend demo/lint-error", user="U0ALICE")
            run = wait_for(lambda: [r for r in RunStore(redis).recent() if r.ref == "demo/lint-error"], timeout=30,
                           what="the bot's run")[0]  # type: ignore[index]
            wait_for(lambda: (t := thread_of(slack, run.id)) and t["replies"] and
                     t["replies"][-1]["text"].startswith(":x: Run"), timeout=120, interval=0.2,
                     what="the worker failing the run at analysis and the bot's thread saying so")
            wait_for(lambda: port_open(port), timeout=30, what="orchestra webhooks")
            body, delivery = body_of(load("pull_request.opened.payload.json")), str(uuid.uuid4())
            request = urllib.request.Request(f"http://127.0.0.1:{port}/github/webhook", data=body,
                                             headers=headers("pull_request", body, delivery=delivery))
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 202
            wait_for(lambda: any(state in ("success", "failure") for context, state in gh.status_states(REPO, PR_SHA)
                                 if context == "orchestra/validate"), timeout=180, interval=0.2,
                     what="the pull request's validation finishing and its commit status")

    refused = {(e[b"username"].decode(), e[b"object"].decode()) for e in redis.execute_command("ACL", "LOG")}
    assert refused == {("worker", "client|list")}  # left out on purpose: RQ records the address as unknown
    assert RunStore(redis).get(run.id).status == RunStatus.FAILED


def test_a_worker_missing_a_needed_permission_stops_at_start_naming_it(redis_url: str, redis: Redis,
                                                                       tmp_path: Path) -> None:
    rules = [r for r in PROCESS_ACLS["worker"].rules() if r not in ("~rq:*", "+info")]
    redis.execute_command("ACL", "SETUSER", "worker-short", "reset", "on", ">pw", *rules)
    result = _orchestra(["worker"], user_url(redis_url, "worker-short", "pw"), tmp_path)

    assert result.returncode == 1
    assert "lacks permissions the worker needs" in result.stderr
    assert "LPUSH rq:queue:probe" in result.stderr and "INFO server" in result.stderr  # a key, a command
    assert "README" in result.stderr and "pw" not in result.stderr.replace("permissions", "")


def test_a_redis_url_of_another_scheme_is_refused_without_echoing_it() -> None:
    with pytest.raises(OrchestraError) as bad:
        Settings.from_env({"REDIS_URL": "http://:hunter2@127.0.0.1:6379/0"})
    assert "hunter2" not in str(bad.value) and "rediss://" in str(bad.value.hint)
    assert Settings.from_env({"REDIS_URL": "rediss://bot:pw@redis.internal:6380/0"}).redis_url.startswith("rediss://")


def test_the_readme_shows_the_acl_each_process_is_checked_against() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    bot = PROCESS_ACLS["bot"]
    assert f"`{' '.join(bot.rules())}`".replace("|", "\\|") in readme
    assert PROCESS_ACLS["webhooks"].rules() == bot.rules()  # "the same as the bot"
    worker = PROCESS_ACLS["worker"]
    assert worker.keys == bot.keys and worker.channels == ("rq:pubsub:*",)
    assert worker.commands == (*bot.commands, "+subscribe", "+unsubscribe", "+publish")
    assert "`&rq:pubsub:*` (after `resetchannels`) `+subscribe +unsubscribe +publish`" in readme


def test_a_unix_socket_redis_is_checked_the_same_way(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    for password in ("s3cret", None):
        auth = ["--requirepass", password] if password else []
        proc = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                                 "--save", "", "--dir", str(tmp_path), *auth], stdout=subprocess.DEVNULL)
        try:
            wait_for(sock.exists, what="redis-server's socket")
            url = f"unix://:{password}@{sock}?db=0" if password else f"unix://{sock}?db=0"
            if password:
                assert connect(url).ping() and public_url(url) == f"unix://:***@{sock}?db=0"
            else:
                with pytest.raises(OrchestraError, match="serves clients that send no password"):
                    connect(url)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            sock.unlink(missing_ok=True)


def test_a_tls_redis_is_reached_with_rediss_and_checked_over_tls_too(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    for password in ("s3cret", None):
        port = free_port()
        auth = ["--requirepass", password] if password else []
        proc = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                                 "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                                 "--tls-auth-clients", "no", "--save", "", "--dir", str(tmp_path), *auth],
                                stdout=subprocess.DEVNULL)
        try:
            wait_for(lambda port=port: port_open(port), what="redis-server with TLS")
            url = f"rediss://{f':{password}@' if password else ''}127.0.0.1:{port}/0?ssl_ca_certs={cert}"
            if password:
                assert connect(url).ping()
            else:
                with pytest.raises(OrchestraError, match="serves clients that send no password"):
                    connect(url)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _scripts_up_redis_block(state: Path, port: int) -> str:
    """scripts/up's Redis lines as they are, on ``port`` instead of 6379, then print what they made."""
    text = (PROJECT_ROOT / "scripts" / "up").read_text()
    helper = text[text.index("wait_until() {"):text.index("\n}\n", text.index("wait_until() {")) + 3]
    start = text.index("# Redis with a password")
    block = text[start:text.index("    wait_until 10 redis_up\nfi\n", start) + len("    wait_until 10 redis_up\nfi\n")]
    return (f"set -euo pipefail\nstate={state}\nstarted=()\n{helper}{block.replace('6379', str(port))}"
            'echo "URL=$REDIS_URL"\necho "PID=${started[0]}"\n')


def test_scripts_up_starts_redis_with_a_generated_password_kept_private_and_reused(tmp_path: Path) -> None:
    port, seen = free_port(), []
    for _ in range(2):  # the second start reuses the password and finds the data of the first
        run = subprocess.run(["bash", "-c", _scripts_up_redis_block(tmp_path, port)], cwd=PROJECT_ROOT,
                             env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        out = dict(line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)
        url, pid = out["URL"], int(out["PID"])
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
            client = connect(url)
            client.incr("orchestra:starts")
            seen.append((url, int(client.get("orchestra:starts") or 0)))
            client.save()
        finally:
            os.kill(pid, 15)
            wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), what="redis-server to stop")
        password = (tmp_path / "redis.password").read_text().strip()
        assert len(password) == 48 and password not in args and password not in run.stdout.replace(url, "")
        assert (tmp_path / "redis.password").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "redis.conf").stat().st_mode & 0o777 == 0o600

    assert seen[0][0] == seen[1][0] == f"redis://:{password}@127.0.0.1:{port}/0"
    assert [count for _, count in seen] == [1, 2]
