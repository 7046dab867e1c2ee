"""Watches hold no worker: runs in flight on one worker, and time from request to first stage, with 20
concurrent runs each watching for WATCH_S, beside the same watch run as one blocking job (the anchor).

    .venv/bin/python bench/bench_watch.py [--runs 20] [--watch 10]

Starts its own redis-server, one real `orchestra worker --no-router` and a router thread, on loopback.
The watch here looks at nothing (each look is the job, the lock, the state and the timer, without a
metrics query): it measures the scheduling, which is what a watch costs a worker between its queries.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.context import AgentContext, StageResult  # noqa: E402
from jobs.graph import Graph, Stage  # noqa: E402
from jobs.router import Router, start_run  # noqa: E402
from jobs.runner import execute_check, execute_stage  # noqa: E402
from orchestra.events import EventBus, EventType  # noqa: E402
from orchestra.settings import Settings  # noqa: E402
from orchestra.store import Run, RunStore  # noqa: E402
from tests.support.services import redis_server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
POLL_S = 2.0  # the watch's look interval (agents/observability/policy.py)


def _plan(ctx: AgentContext) -> dict[str, float]:
    return json.loads(ctx.redis.get(f"bench:plan:{ctx.run.id}") or "{}")


def begin(run_id: str) -> dict[str, Any]:
    def agent(ctx: AgentContext) -> StageResult:
        ctx.redis.set(f"bench:deadline:{ctx.run.id}", time.time() + _plan(ctx)["watch_s"])
        return StageResult(True, "watching", later_s=POLL_S)
    return execute_stage(run_id, SCHEDULED, agent)


def look(run_id: str) -> dict[str, Any]:
    def agent(ctx: AgentContext) -> StageResult:
        ctx.redis.incr("bench:looks")
        if time.time() >= float(ctx.redis.get(f"bench:deadline:{ctx.run.id}") or 0):
            return StageResult(True, "watched")
        return StageResult(True, "watching", later_s=POLL_S)
    return execute_check(run_id, SCHEDULED, agent)


def blocking(run_id: str) -> dict[str, Any]:
    def agent(ctx: AgentContext) -> StageResult:
        deadline = time.time() + _plan(ctx)["watch_s"]
        while time.time() < deadline:
            ctx.redis.incr("bench:looks")
            time.sleep(POLL_S)
        return StageResult(True, "watched")
    return execute_stage(run_id, BLOCKING, agent)


SCHEDULED = Stage("watch", "bench.bench_watch.begin", EventType.OBSERVATION_PASSED, timeout=600,
                  kinds=frozenset({"validate"}), check="bench.bench_watch.look")
BLOCKING = Stage("watch", "bench.bench_watch.blocking", EventType.OBSERVATION_PASSED, timeout=3600,
                 kinds=frozenset({"validate"}))


def measure(redis: Redis, settings: Settings, repo: Path, graph: Graph, runs: int, watch_s: float) -> dict[str, float]:
    redis.flushdb()
    env = {**os.environ, "REDIS_URL": settings.redis_url, "ORCHESTRA_WORKDIR": str(settings.workdir),
           "ORCHESTRA_SANDBOX": "none"}
    worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--no-router"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    stop = threading.Event()
    router = threading.Thread(target=Router(redis, settings, graph=graph, name="bench").run, args=(stop,),
                              daemon=True)
    router.start()
    try:
        asked: dict[str, float] = {}
        for _ in range(runs):
            run = RunStore(redis).create(Run(kind="validate", requested_by="bench", repo=str(repo)))
            redis.set(f"bench:plan:{run.id}", json.dumps({"watch_s": watch_s}))
            asked[run.id] = time.time()
            start_run(redis, settings, run, graph=graph)
        store, in_flight, begun = RunStore(redis), 0, time.time()
        while not all(store.get(r).status.finished for r in asked):
            bus = EventBus(redis)
            in_flight = max(in_flight, sum(1 for r in asked if any(e.type == EventType.STAGE_STARTED
                                                                   for e in bus.replay(r))
                                           and not store.get(r).status.finished))
            time.sleep(0.5)
        total = time.time() - begun
        firsts = [next(e.ts for e in EventBus(redis).replay(r) if e.type == EventType.STAGE_STARTED) - t
                  for r, t in asked.items()]
        return {"in_flight": in_flight, "first_p50": statistics.median(firsts), "first_max": max(firsts),
                "total": total, "looks": int(redis.get("bench:looks") or 0)}
    finally:
        stop.set()
        router.join(timeout=10)
        worker.terminate()
        worker.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--watch", type=float, default=10.0)
    args = parser.parse_args()
    with redis_server() as url, tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        (repo / "app.py").write_text("print('hello')\n")
        for git in (["init", "-q", "-b", "main"], ["add", "-A"],
                    ["-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "first"]):
            subprocess.run(["git", "-C", str(repo), *git], check=True)
        settings = Settings.from_env().with_(redis_url=url, workdir=Path(tmp) / "work", sandbox="none")
        redis = Redis.from_url(url)
        rows = [(name, measure(redis, settings, repo, Graph((stage,)), args.runs, args.watch))
                for name, stage in (("scheduled looks (ours)", SCHEDULED), ("one blocking job (anchor)", BLOCKING))]
    print(f"\n{args.runs} concurrent runs, each watching {args.watch:.0f}s, one worker, a look every {POLL_S:.0f}s\n")
    print(f"| {'design':<26} | runs in flight | request → first stage p50 | max | all done | looks |")
    print(f"|{'-' * 28}|---------------:|--------------------------:|----:|---------:|------:|")
    for name, r in rows:
        print(f"| {name:<26} | {r['in_flight']:>14.0f} | {r['first_p50']:>24.2f}s | {r['first_max']:.1f}s "
              f"| {r['total']:>7.1f}s | {r['looks']:>5} |")


if __name__ == "__main__":
    main()
