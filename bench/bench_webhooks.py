"""Benchmark the GitHub webhook receiver: deliveries accepted per second, and delivery -> first event.

Starts a real redis-server, the local GitHub API server and `orchestra webhooks` as its own
process (receiver + relay), then posts signed push deliveries (derived from the real
fixtures) concurrently. Runs are created by the real dispatch; no worker runs the stages.

    .venv/bin/python bench/bench_webhooks.py [--deliveries 400] [--concurrency 16]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from redis import Redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.github.handoff import outcome  # noqa: E402
from orchestra.events import EventBus  # noqa: E402
from tests.support.fake_github import fake_github  # noqa: E402
from tests.support.github_payloads import SECRET, body_of, headers, load, push  # noqa: E402
from tests.support.services import free_port, port_open, redis_server, wait_for  # noqa: E402

CONFIG = ("project:\n  name: hello\ndeployment:\n  services:\n    - name: backend\n      path: backend\n"
          "environments:\n  staging:\n    branches: [main]\n")


async def post_all(url: str, bodies: list[tuple[str, bytes, str]], concurrency: int,
                   secret: str) -> tuple[float, list[Any]]:
    """POST every (event, body, delivery); returns wall time and (delivery, status, sent_at, answer_s)."""
    queue: asyncio.Queue[tuple[str, bytes, str]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    results: list[Any] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            event, body, delivery = queue.get_nowait()
            sent = time.time()
            hdrs = headers(event, body, delivery=delivery, secret=secret)
            async with session.post(url, data=body, headers=hdrs) as resp:
                await resp.read()
            results.append((delivery, resp.status, sent, time.time() - sent))

    start = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return time.perf_counter() - start, results


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def scenario(url: str, name: str, bodies: list[tuple[str, bytes, str]], concurrency: int,
             rows: list[str], *, secret: str = SECRET) -> list[Any]:
    wall, results = asyncio.run(post_all(url, bodies, concurrency, secret))
    answers = [r[3] * 1000 for r in results]
    codes = sorted({r[1] for r in results})
    rows.append(f"| {name} | {len(results)} | {codes} | {len(results) / wall:,.0f} | "
                f"{statistics.median(answers):.1f} | {pct(answers, 0.99):.1f} |")
    return results


def first_event_latencies(redis: Redis, results: list[Any]) -> list[float]:
    bus, out = EventBus(redis), []
    for delivery, status, sent, _ in results:
        if status != 202:
            raise RuntimeError(f"delivery {delivery} was answered {status}, not 202")
        done = wait_for(partial(outcome, redis, delivery), timeout=120, what=f"outcome of {delivery}")
        events = bus.replay(str(done.run_id))  # type: ignore[attr-defined]
        out.append((events[0].ts - sent) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    n = args.deliveries
    with redis_server() as redis_url, fake_github() as gh, tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "Codertocat" / "Hello-World"  # served for the owner/name its path ends in
        (repo / "backend").mkdir(parents=True)
        (repo / "devops_orchestra.yaml").write_text(CONFIG)
        port = free_port()
        env = {**os.environ, "REDIS_URL": redis_url, "GITHUB_WEBHOOK_SECRET": SECRET, "GITHUB_TOKEN": str(gh.token),
               "GITHUB_API_URL": gh.url, "ORCHESTRA_REPOS": str(repo), "ORCHESTRA_WORKDIR": f"{tmp}/work"}
        command = [sys.executable, "-m", "cli", "webhooks", "--port", str(port)]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: port_open(port), timeout=30, what="orchestra webhooks")
            url = f"http://127.0.0.1:{port}/github/webhook"
            rows: list[str] = []
            redis = Redis.from_url(redis_url)
            serial = [("push", body_of(push("main", ["backend/app.py"], sha=f"{i + 1:040x}")), str(uuid.uuid4()))
                      for i in range(max(10, n // 8))]
            latency_rows = [("one at a time", first_event_latencies(
                redis, scenario(url, "push -> run, one at a time", serial, 1, rows)))]
            pushes = [("push", body_of(push("main", ["backend/app.py"], sha=f"{i + 1:040x}")), str(uuid.uuid4()))
                      for i in range(n)]
            started = scenario(url, "push -> run (202 accepted)", pushes, args.concurrency, rows)
            latency_rows.append((f"burst of {n}, {args.concurrency} concurrent",
                                 first_event_latencies(redis, started)))
            scenario(url, "redelivery (200 duplicate)", pushes, args.concurrency, rows)
            tag = body_of(load("push.payload.json"))
            scenario(url, "tag push (202 ignored)", [("push", tag, str(uuid.uuid4())) for _ in range(n)],
                     args.concurrency, rows)
            scenario(url, "malformed payload (400)", [("push", b"{}", str(uuid.uuid4())) for _ in range(n)],
                     args.concurrency, rows)
            scenario(url, "bad signature (401)", [("push", tag, str(uuid.uuid4())) for _ in range(n)],
                     args.concurrency, rows, secret="wrong")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"GitHub webhook receiver, {n} deliveries per scenario, {args.concurrency} concurrent clients, "
          f"{os.cpu_count()} CPUs\n")
    print("| scenario | deliveries | HTTP codes | accepted/s | answer p50 ms | answer p99 ms |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n| push delivery -> run's first event (code_push) | p50 ms | p95 ms | max ms |\n|---|---|---|---|")
    for name, values in latency_rows:
        print(f"| {name} | {pct(values, 0.5):.1f} | {pct(values, 0.95):.1f} | {max(values):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
