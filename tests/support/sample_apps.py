"""Tiny services written into a temp dir, for build and deploy tests."""
from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.services import free_port

PLAIN_APP = '''\
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("APP_VERSION", "dev")
HEALTHY = {healthy!r}
if {crash!r}:
    raise SystemExit("this version crashes at start")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        status = 500 if self.path == "/health" and not HEALTHY else 200
        body = json.dumps({{"version": VERSION, "path": self.path, "code": {marker!r}}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True


if __name__ == "__main__":
    Server((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler).serve_forever()
'''

FLASK_APP = '''\
import os

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/health")
def health():
    return jsonify(status="ok")


@app.get("/")
def index():
    return jsonify(version=os.environ.get("APP_VERSION", "dev"), code={marker!r})
'''


def plain_app(path: Path, *, marker: str = "v1", healthy: bool = True, crash: bool = False) -> Path:
    """A standard-library HTTP service answering / and /health with its APP_VERSION."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "app.py").write_text(PLAIN_APP.format(marker=marker, healthy=healthy, crash=crash))
    return path


def flask_app(path: Path, *, marker: str = "v1") -> Path:
    """A Flask service without a __main__ block (started by the generated Dockerfile's command)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "requirements.txt").write_text("flask==3.1.2\n")
    (path / "app.py").write_text(FLASK_APP.format(marker=marker))
    return path


def sample_repo(path: Path, services: dict[str, list[str]], *, steps: str = "[10, 50, 100]") -> Path:
    """A repository with a devops_orchestra.yaml naming ``services`` ({name: depends_on})."""
    path.mkdir(parents=True, exist_ok=True)
    entries = "".join(f"    - name: {name}\n      path: {name}\n      port: {free_port_hint(i)}\n"
                      f"      depends_on: {deps}\n" for i, (name, deps) in enumerate(services.items()))
    (path / "devops_orchestra.yaml").write_text(
        "project:\n  name: shop\ndeployment:\n  strategy: blue-green\n  services:\n" + entries
        + f"  canary:\n    steps: {steps}\n    analysis_interval: 1s\n"
        + "  blue_green:\n    keep_previous: 10m\n")
    for name in services:
        plain_app(path / name)
    return path


def free_port_hint(index: int) -> int:
    """A configured port that is free now (the edge listens there)."""
    return free_port()


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo``; its output."""
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def with_hotfix_branch(path: Path) -> Path:
    """``path`` (a folder with an ``api/app.py``) as a git repository whose hotfix-v2 is a commit ahead of main."""
    git(path, "init", "-q", "-b", "main")
    for key, value in (("user.name", "Dev"), ("user.email", "dev@example.com"), ("commit.gpgsign", "false")):
        git(path, "config", key, value)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "first")
    git(path, "checkout", "-qb", "hotfix-v2")
    (path / "api" / "app.py").write_text((path / "api" / "app.py").read_text() + "# the hotfix\n")
    git(path, "commit", "-qam", "hotfix")
    git(path, "checkout", "-q", "main")
    return path
