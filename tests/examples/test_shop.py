"""The example shop: its own tests pass, its apps really serve, and the demo repository trips each gate."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.shop import DEMO_BRANCHES, SHOP_DIR, make_demo_repo, shop_service

RUFF = Path(sys.executable).with_name("ruff")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def pytest_in(service_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=service_dir,
                          env=env, capture_output=True, text=True, timeout=120)


def ruff(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RUFF), "check", "--isolated", "--no-cache", "--output-format", "concise", "."],
                          cwd=path, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("service", ["backend", "frontend"])
def test_the_services_own_tests_pass(service: str) -> None:
    result = pytest_in(SHOP_DIR / service)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_the_example_is_ruff_clean_with_default_rules() -> None:
    result = ruff(SHOP_DIR)
    assert result.returncode == 0, result.stdout


def test_frontend_lists_what_the_real_backend_serves() -> None:
    with shop_service("backend", env={"APP_VERSION": "v7"}) as backend, \
            shop_service("frontend", env={"BACKEND_URL": backend, "APP_VERSION": "v3"}) as frontend:
        status, body = get(f"{backend}/health")
        assert status == 200 and json.loads(body) == {"status": "ok", "service": "backend", "version": "v7"}
        status, page = get(f"{frontend}/")
        assert status == 200 and "<li>Pour-over kettle: 42.00</li>" in page and "version v3" in page
        _, metrics = get(f"{backend}/metrics")
        assert 'http_requests_total{path="/api/items",status="200",version="v7"} 1.0' in metrics
        assert 'http_request_duration_seconds_count{version="v7"} 1.0' in metrics
        assert "process_resident_memory_bytes" in metrics


def test_fault_knobs_fail_requests_but_keep_health_up() -> None:
    with shop_service("backend", env={"APP_VERSION": "bad", "FAULT_ERROR_RATE": "1"}) as backend:
        assert get(f"{backend}/api/items")[0] == 500
        assert get(f"{backend}/health")[0] == 200
        _, metrics = get(f"{backend}/metrics")
        assert 'http_requests_total{path="/api/items",status="500",version="bad"} 1.0' in metrics


def test_demo_repository_branches(tmp_path: Path) -> None:
    repo = make_demo_repo(tmp_path / "shop")
    git = ["git", "-C", str(repo)]
    branches = subprocess.run([*git, "branch", "--format=%(refname:short)"], capture_output=True, text=True,
                              check=True).stdout.split()
    assert sorted(branches) == sorted(DEMO_BRANCHES)
    assert subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout == ""
    assert ruff(repo).returncode == 0

    subprocess.run([*git, "checkout", "-q", "demo/lint-error"], check=True)
    lint = ruff(repo).stdout
    assert "backend/pricing.py:5:31: F821 Undefined name `TAX_RATE`" in lint
    assert "backend/discounts.py:4:" in lint and "invalid-syntax" in lint

    subprocess.run([*git, "checkout", "-q", "demo/missing-import"], check=True)
    assert "import requests" in (repo / "backend" / "notify.py").read_text()
    assert "requests" not in (repo / "backend" / "requirements.txt").read_text()
    assert ruff(repo).returncode == 0

    subprocess.run([*git, "checkout", "-q", "demo/failing-test"], check=True)
    result = pytest_in(repo / "backend")
    assert result.returncode == 1 and "test_catalogue_has_four_items" in result.stdout


def test_demo_repository_refuses_a_non_empty_destination(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(subprocess.CalledProcessError) as caught:
        make_demo_repo(tmp_path)
    assert "not empty" in caught.value.stderr
