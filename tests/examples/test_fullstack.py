"""The fullstack example: the API's and the page's own tests pass (with coverage), and a real browser
shows data the real Flask API served through the web server.

The web service's npm dependencies are installed once per session (`npm ci` from the committed lock
file, through npm's own cache) into a copy of the folder, never into the repository.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from redis import Redis

from agents.observability.live import targets_path
from orchestra.events import EventBus, EventType
from orchestra.settings import PROJECT_ROOT, Settings
from tests.jobs.conftest import orchestra_env
from tests.support.docker_services import DockerEnv
from tests.support.prometheus import prometheus_server
from tests.support.services import free_port, wait_for
from tests.support.shop import shop_service

FULLSTACK = PROJECT_ROOT / "examples" / "fullstack"
NPM = shutil.which("npm")
CHROMIUM = shutil.which("chromium")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def npm(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    assert NPM is not None, "npm is not installed (apt-get install npm)"
    env = {**os.environ, "NPM_CONFIG_UPDATE_NOTIFIER": "false", "NPM_CONFIG_FUND": "false", "CI": "1",
           "NO_COLOR": "1", "FORCE_COLOR": "0"}
    return subprocess.run([NPM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def web(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of web/ with its locked dependencies installed and the page built."""
    home = Path(shutil.copytree(FULLSTACK / "web", tmp_path_factory.mktemp("fullstack") / "web",
                                ignore=shutil.ignore_patterns("node_modules", "dist", "coverage")))
    for step in (["ci", "--no-audit"], ["run", "build"]):
        result = npm(step, home)
        assert result.returncode == 0, result.stdout + result.stderr
    return home


@contextmanager
def web_server(home: Path, api_url: str) -> Iterator[str]:
    port = free_port()
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "API_URL": api_url, "APP_VERSION": "w9"}
    proc = subprocess.Popen(["node", "server.js"], cwd=home, env=env, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is None and get(f"{url}/health")[0] == 200, timeout=15, what="web server.js")
        yield url
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0  # SIGTERM closes the server cleanly
        if proc.stderr is not None:
            proc.stderr.close()


def test_the_api_own_tests_pass() -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=FULLSTACK / "api",
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and " passed" in result.stdout, result.stdout + result.stderr


def test_the_lock_file_is_committed_and_the_tree_stays_small() -> None:
    lock = json.loads((FULLSTACK / "web" / "package-lock.json").read_text())
    packages = [p for p in lock["packages"] if p.startswith("node_modules/")]
    assert lock["lockfileVersion"] == 3 and len(packages) < 200, len(packages)
    assert not (FULLSTACK / "web" / "node_modules").exists() or "node_modules/" in (
        FULLSTACK / "web" / ".gitignore").read_text()


def test_the_web_own_tests_pass_with_coverage(web: Path) -> None:
    result = npm(["test"], web)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Tests  9 passed (9)" in result.stdout
    total = json.loads((web / "coverage" / "coverage-summary.json").read_text())["total"]
    assert total["lines"]["pct"] > 70 and total["lines"]["total"] > 50


def test_a_broken_component_fails_the_web_tests(web: Path, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(web, tmp_path / "web", symlinks=True))
    books = broken / "src" / "Books.jsx"
    books.write_text(books.read_text().replace("api version", "version"))
    result = npm(["test"], broken)
    assert result.returncode != 0 and "lists the books and the API version" in result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_page_shows_what_the_real_api_serves(web: Path, tmp_path: Path) -> None:
    with shop_service("api", env={"APP_VERSION": "a7"}, source=FULLSTACK) as api, web_server(web, api) as site:
        status, body = get(f"{site}/api/books")
        assert status == 200 and json.loads(body)["version"] == "a7"
        dom = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              "--disable-background-networking", "--disable-component-update", "--disable-sync",
                              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                              "--dump-dom", f"{site}/"], capture_output=True, text=True, timeout=60).stdout
        assert "<li>The Phoenix Project (2013)</li>" in dom and "api version a7" in dom, dom[-2000:]
        _, metrics = get(f"{site}/metrics")
        assert 'http_requests_total{path="/api",status="200",version="w9"}' in metrics
        _, api_metrics = get(f"{api}/metrics")
        assert 'http_requests_total{path="/api/books",status="200",version="a7"} 2.0' in api_metrics


def test_the_page_says_when_the_api_is_down(web: Path, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with web_server(web, f"http://127.0.0.1:{free_port()}") as site:
        assert get(f"{site}/api/books")[0] == 502
        dom = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                              "--dump-dom", f"{site}/"], capture_output=True, text=True, timeout=60).stdout
        assert "API unavailable: HTTP 502" in dom, dom[-2000:]


def _fullstack_repo(dest: Path) -> Path:
    """examples/fullstack as a git repository (the committed files, no installed or built output)."""
    repo = Path(shutil.copytree(FULLSTACK, dest, ignore=shutil.ignore_patterns(
        "node_modules", "dist", "coverage", "__pycache__", ".pytest_cache")))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "fullstack"], check=True)
    return repo


@pytest.mark.docker
def test_orchestra_run_puts_the_fullstack_example_live(settings: Settings, docker_env: DockerEnv,
                                                       redis: Redis, tmp_path: Path) -> None:
    """Both services build on the offline bases (Node's named by ORCHESTRA_NODE_BASE_IMAGE), deploy to
    staging, and the live page's server answers with what the live API serves."""
    node_image = docker_env.node_image()
    repo = _fullstack_repo(tmp_path / "fullstack")
    with docker_env.connected(stop_deployed_in=settings.workdir), \
            prometheus_server(targets_file=targets_path(settings.workdir)) as prometheus:
        env = {**orchestra_env(settings), "DOCKER_HOST": docker_env.url, "ORCHESTRA_REGISTRY": docker_env.registry,
               "ORCHESTRA_BASE_IMAGE": docker_env.base_image, "ORCHESTRA_NODE_BASE_IMAGE": node_image,
               "ORCHESTRA_PROMETHEUS_URL": prometheus.url,
               "ORCHESTRA_BUILD_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}
        run = subprocess.run([sys.executable, "-m", "cli", "run", "--repo", str(repo), "--env", "staging",
                              "--user", "U0ALICE"], env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-3000:]
        run_id = run.stdout.splitlines()[0].split()[1]
        live = next(e for e in EventBus(redis).replay(run_id) if e.type == EventType.DEPLOYMENT_SUCCEEDED).data
        web_url, api_url = live["live"]["web"]["url"], live["live"]["api"]["url"]
        assert live["live"]["web"]["current"]["image"].startswith(f"{docker_env.registry}/fullstack-web:")
        status, body = get(f"{web_url}/api/books")
        assert status == 200 and json.loads(body) == json.loads(get(f"{api_url}/api/books")[1])
        assert "The Phoenix Project" in body
        status, page = get(f"{web_url}/")
        assert status == 200 and '<div id="root">' in page
