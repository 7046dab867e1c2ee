"""The README's branches of the demo repository, and making it once for scripts/up (--reuse)."""
from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from orchestra.config import load_config
from tests.support.shop import MAKE_DEMO_REPO, make_demo_repo, shop_service


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def page(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def reuse(dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MAKE_DEMO_REPO), "--reuse", str(dest)], capture_output=True, text=True, timeout=60)


def test_hotfix_shows_on_the_page_and_the_faulty_release_fails_half_the_pages(tmp_path: Path) -> None:
    repo = make_demo_repo(tmp_path / "shop")
    git(repo, "checkout", "-q", "hotfix-v2")
    assert git(repo, "diff", "--stat", "main", "hotfix-v2").count("|") == 2  # the page and its test
    with shop_service("backend", source=repo) as backend, \
            shop_service("frontend", source=repo, env={"BACKEND_URL": backend}) as frontend:
        status, text = page(frontend + "/")
        assert status == 200 and "Free delivery on orders over 30.00" in text and "Espresso cup" in text

    git(repo, "checkout", "-q", "release/faulty")
    env = load_config(repo).service("frontend").env_dict()
    assert env["FAULT_ERROR_RATE"] == "0.5"
    with shop_service("backend", source=repo) as backend, \
            shop_service("frontend", source=repo, env={**env, "BACKEND_URL": backend}) as frontend:
        statuses = [page(frontend + "/")[0] for _ in range(60)]
        assert 10 < statuses.count(500) < 50 and statuses.count(500) + statuses.count(200) == 60
        assert page(frontend + "/health")[0] == 200  # health stays green: only traffic shows the fault


def test_reuse_makes_it_once_and_keeps_it(tmp_path: Path) -> None:
    dest = tmp_path / "state" / "shop"
    first = reuse(dest)
    assert first.returncode == 0 and "ready at" in first.stdout, first.stderr
    head = git(dest, "rev-parse", "release/faulty")
    again = reuse(dest)
    assert again.returncode == 0 and "reused at" in again.stdout
    assert git(dest, "rev-parse", "release/faulty") == head and not (tmp_path / "state" / "shop.new").exists()


def test_reuse_replaces_what_an_interrupted_start_left(tmp_path: Path) -> None:
    dest = tmp_path / "shop"
    half = make_demo_repo(tmp_path / "shop.new")  # a made repository that was never moved into place
    git(half, "branch", "-D", "release/faulty")
    make_demo_repo(dest)
    git(dest, "branch", "-D", "release/faulty")  # an older demo repository without today's branches
    result = reuse(dest)
    assert result.returncode == 0, result.stderr
    assert "release/faulty" in git(dest, "branch") and not (tmp_path / "shop.new").exists()


def test_reuse_never_removes_a_folder_it_did_not_make(tmp_path: Path) -> None:
    mine = tmp_path / "shop"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    result = reuse(mine)
    assert result.returncode == 1 and "is not a demo repository" in result.stderr
    assert (mine / "notes.txt").read_text() == "mine"
    inside = tmp_path / "project"  # a folder inside another git repository is not that repository
    inside.mkdir()
    subprocess.run(["git", "init", "-q", str(inside)], check=True)
    git(inside, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x")
    git(inside, "branch", "release/faulty")
    (inside / "shop").mkdir()
    assert reuse(inside / "shop").returncode == 1 and (inside / ".git").exists()
