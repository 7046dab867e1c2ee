"""Benchmark the local build-and-deploy path on the example shop; prints a table.

    .venv/bin/python bench/bench_deploy.py [--requests N]

Starts its own Redis, Docker engine (with the base image) and registry, like the tests do, and
stops them at the end. Measures:
- push-to-live: build stage + deploy stage for both services, cold (no layer cache) and warm
  (a code change in the backend only);
- rollback: from the command to 100 % of the backend's traffic on the previous version;
- failed requests during a blue-green switch of the backend, under a request loop.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from redis import Redis  # noqa: E402

import agents.build  # noqa: E402
from agents.context import AgentContext  # noqa: E402
from agents.deploy import stage as deploy  # noqa: E402
from agents.deploy.targets.docker import LABEL  # noqa: E402
from agents.deploy.targets.edge import Edge  # noqa: E402
from orchestra.config import load_config  # noqa: E402
from orchestra.events import EventBus, EventType  # noqa: E402
from orchestra.settings import Settings  # noqa: E402
from orchestra.store import Run  # noqa: E402
from tests.support.docker_services import shared_docker  # noqa: E402
from tests.support.services import redis_server  # noqa: E402

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def _ctx(repo: Path, settings: Settings, redis: Redis, commit: str) -> AgentContext:
    run = Run(requested_by="bench", repo=str(repo), env="staging", commit=commit)
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="bench")


def push_to_live(repo: Path, settings: Settings, redis: Redis, client, commit: str,
                 nocache: bool) -> tuple[float, float, float]:
    """(build s, deploy s, total s) for both services."""
    ctx = _ctx(repo, settings, redis, commit)
    start = time.monotonic()
    built = agents.build.run(ctx, client=client, nocache=nocache)
    assert built.passed, built.summary
    build_s = time.monotonic() - start
    ctx.bus.emit(ctx.run.id, EventType.BUILD_READY, "build", **built.data, passed=True, summary=built.summary)
    live = deploy.run(ctx, client=client, pause_s=0)
    assert live.passed, live.summary
    total = time.monotonic() - start
    return build_s, total - build_s, total


def _version(url: str) -> str:
    with urllib.request.urlopen(url + "/health", timeout=5) as response:
        return response.read().decode()


def switch_under_load(repo: Path, settings: Settings, redis: Redis, client, url: str,
                      after: int) -> tuple[int, int, float]:
    """(requests, failures, switch s): a blue-green deploy of a backend change while requests run."""
    counts = {"ok": 0, "failed": 0}
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                _version(url)
                counts["ok"] += 1
            except Exception:  # counted: this is what the benchmark measures
                counts["failed"] += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    (repo / "backend" / "app.py").write_text((repo / "backend" / "app.py").read_text() + "\n# switch\n")
    _, _, total = push_to_live(repo, settings, redis, client, "c0ffee03", nocache=False)
    target = counts["ok"] + counts["failed"] + after
    while counts["ok"] + counts["failed"] < target:
        time.sleep(0.01)
    stop.set()
    thread.join()
    return counts["ok"] + counts["failed"], counts["failed"], total


def rollback_time(repo: Path, settings: Settings, redis: Redis, client, url: str) -> tuple[float, str]:
    ctx = _ctx(repo, settings, redis, "rollback")
    start = time.monotonic()
    result = deploy.rollback(ctx, "backend", client=client)
    while result.data["to_version"] not in _version(url):
        time.sleep(0.01)
    return time.monotonic() - start, str(result.data["to_version"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests after the switch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp, redis_server() as redis_url, \
            shared_docker() as env:
        repo = Path(tmp) / "shop"
        shutil.copytree(PROJECT_ROOT / "examples" / "shop", repo,
                        ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        settings = Settings(redis_url=redis_url, workdir=Path(tmp) / "work", registry=env.registry,
                            base_image=env.base_image, build_ca_bundle=CA_BUNDLE)
        redis, client = Redis.from_url(redis_url), env.client()
        try:
            rows = _measure(repo, settings, redis, client, args.requests)
        finally:
            for edge_dir in (settings.workdir / "edge").glob("*"):
                Edge(edge_dir, 0).stop()
            for container in client.containers.list(all=True, filters={"label": LABEL}):
                container.remove(force=True)
    _print(rows)
    return 0


def _measure(repo: Path, settings: Settings, redis: Redis, client, after: int) -> list[tuple[str, str]]:
    cold = push_to_live(repo, settings, redis, client, "c0ffee01", nocache=True)
    (repo / "backend" / "app.py").write_text((repo / "backend" / "app.py").read_text() + "\n# change\n")
    warm = push_to_live(repo, settings, redis, client, "c0ffee02", nocache=False)
    url = deploy.live(redis)[0]["url"]  # backend (sorted first)
    requests, failed, switch_s = switch_under_load(repo, settings, redis, client, url, after)
    rollback_s, version = rollback_time(repo, settings, redis, client, url)
    return [
        ("push-to-live, cold cache (2 services)", f"{cold[2]:.1f} s (build {cold[0]:.1f} s, deploy {cold[1]:.1f} s)"),
        ("push-to-live, warm cache (backend code change)",
         f"{warm[2]:.1f} s (build {warm[0]:.1f} s, deploy {warm[1]:.1f} s)"),
        ("rollback: command to 100% on the previous version", f"{rollback_s:.2f} s (back on {version})"),
        ("failed requests during a blue-green switch", f"{failed} of {requests} (switch took {switch_s:.1f} s)"),
    ]


def _print(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"{'measure'.ljust(width)} | result")
    print(f"{'-' * width}-|-{'-' * 40}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")


if __name__ == "__main__":
    sys.exit(main())
