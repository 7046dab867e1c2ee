"""The example shop for tests: a demo git repository, and its services running as real processes."""
from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestra.settings import PROJECT_ROOT
from tests.support.services import free_port, wait_for

SHOP_DIR = PROJECT_ROOT / "examples" / "shop"
MAKE_DEMO_REPO = PROJECT_ROOT / "scripts" / "make-demo-repo"
DEMO_BRANCHES = ("main", "demo/lint-error", "demo/missing-import", "demo/failing-test", "hotfix-v2", "release/faulty")


def make_demo_repo(dest: Path) -> Path:
    """A git repository of the shop at ``dest`` with the demo branches (see scripts/make-demo-repo)."""
    subprocess.run([str(MAKE_DEMO_REPO), str(dest)], check=True, capture_output=True, text=True, timeout=60)
    return dest


@contextmanager
def shop_service(name: str, *, port: int | None = None, env: dict[str, str] | None = None,
                 source: Path = SHOP_DIR) -> Iterator[str]:
    """Run ``<source>/<name>/app.py`` with this interpreter on a free loopback port; yields its base URL."""
    port = port or free_port()
    environ = {"PATH": "/usr/bin:/bin", "PORT": str(port), "HOST": "127.0.0.1", "PYTHONDONTWRITEBYTECODE": "1",
               **(env or {})}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=source / name, env=environ,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url, proc), timeout=15, what=f"{name} on port {port}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def _healthy(url: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        error = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"the service exited with status {proc.returncode}: {error[-2000:]}")
    with urllib.request.urlopen(f"{url}/health", timeout=1) as reply:
        return bool(reply.status == 200)
