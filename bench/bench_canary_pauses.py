"""Canary pauses hold no worker: runs in flight on one worker, and time from request to first stage, with 20
concurrent canary deploys, beside the same canaries sleeping in their deploy job (the anchor, today's path
before the pauses were scheduled; still how non-docker targets pause).

    .venv/bin/python bench/bench_canary_pauses.py [--runs 20] [--pause 2]

Starts its own redis-server, Docker engine and registry (as the tests do), one real
`orchestra worker --no-router` and a router thread, on loopback. Each run is a real canary of one service
(steps 10, 50, 100; health-checked between steps, no metrics): a container started, an nginx edge
reloaded at each step. Both designs deploy the same services, ours first (v1 -> v2), then the anchor
(v2 -> v3). "Worker busy" is the sum of the run's job durations from RQ's finished registry.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from redis import Redis
from rq.job import Job
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.build.dockerfile import Images  # noqa: E402
from agents.build.service import BuildRequest, ServiceSpec, build_service  # noqa: E402
from agents.context import AgentContext, StageResult  # noqa: E402
from agents.deploy import stage as deploy_agent  # noqa: E402
from jobs.dispatch import dispatch  # noqa: E402
from jobs.graph import DEPLOY, Graph  # noqa: E402
from jobs.queue import stage_queue  # noqa: E402
from jobs.router import Router  # noqa: E402
from jobs.runner import execute_stage  # noqa: E402
from orchestra.config import load_config  # noqa: E402
from orchestra.events import EventBus, EventType  # noqa: E402
from orchestra.intents import Intent, IntentKind  # noqa: E402
from orchestra.settings import Settings  # noqa: E402
from orchestra.store import Run, RunStore  # noqa: E402
from tests.jobs.conftest import orchestra_env  # noqa: E402
from tests.support.docker_services import shared_docker, stop_deployed  # noqa: E402
from tests.support.sample_apps import plain_app, sample_repo  # noqa: E402
from tests.support.services import redis_server  # noqa: E402

ENV = "staging"


def in_job(run_id: str) -> dict[str, Any]:
    """The anchor: the whole canary in the deploy job, sleeping through its pauses."""
    def agent(ctx: AgentContext) -> StageResult:
        return deploy_agent.run(ctx)  # not paced: the strategy sleeps between steps
    return execute_stage(run_id, SLEEPING, agent)


PACED = replace(DEPLOY, approval=False)
SLEEPING = replace(DEPLOY, func="bench.bench_canary_pauses.in_job", check=None, approval=False)


def measure(redis: Redis, settings: Settings, repo: Path, stage: Any, services: list[str],
            image: dict[str, str]) -> dict[str, float]:
    graph = Graph((stage,))
    env = {**orchestra_env(settings), "DOCKER_HOST": settings.docker_host or "",
           "ORCHESTRA_REGISTRY": settings.registry, "ORCHESTRA_BASE_IMAGE": settings.base_image}
    worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--no-router"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(2)  # the worker is up before the burst, as it would be
    stop = threading.Event()
    router = threading.Thread(target=Router(redis, settings, graph=graph, name="bench").run, args=(stop,),
                              daemon=True)
    router.start()
    try:
        asked: dict[str, float] = {}
        for service in services:
            at = time.time()
            run = dispatch(Intent(kind=IntentKind.DEPLOY, service=service, env=ENV, strategy="canary", user="bench"),
                           redis=redis, settings=settings, repo=repo, graph=graph)
            EventBus(redis).emit(run.id, EventType.BUILD_READY, "build", images={service: image}, passed=True)
            asked[run.id] = at
        store, in_flight, begun = RunStore(redis), 0, time.time()
        while not all(store.get(r).status.finished for r in asked):
            bus = EventBus(redis)
            in_flight = max(in_flight, sum(1 for r in asked if any(e.type == EventType.STAGE_STARTED
                                                                   for e in bus.replay(r))
                                           and not store.get(r).status.finished))
            time.sleep(0.2)
        total = time.time() - begun
        failed = [r for r in asked if store.get(r).status.value != "succeeded"]
        firsts = [next(e.ts for e in EventBus(redis).replay(r) if e.type == EventType.STAGE_STARTED) - t
                  for r, t in asked.items()]
        busy = 0.0
        for job_id in FinishedJobRegistry(queue=stage_queue(redis)).get_job_ids():
            job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
            if job.meta.get("run_id") in asked and job.started_at and job.ended_at:
                busy += (job.ended_at - job.started_at).total_seconds()
        return {"in_flight": in_flight, "first_p50": statistics.median(firsts), "first_max": max(firsts),
                "total": total, "busy": busy / len(asked), "failed": len(failed)}
    finally:
        stop.set()
        router.join(timeout=10)
        worker.terminate()
        worker.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pause", type=float, default=2.0, help="deployment.canary.analysis_interval, seconds")
    args = parser.parse_args()
    services = [f"s{i:02d}" for i in range(args.runs)]
    with redis_server() as url, tempfile.TemporaryDirectory() as tmp, shared_docker() as docker_env:
        root = Path(tmp)
        settings = Settings.from_env().with_(redis_url=url, workdir=root / "work", cache_dir=root / "cache",
                                             sandbox="none", docker_host=docker_env.url,
                                             registry=docker_env.registry, base_image=docker_env.base_image)
        client = docker_env.client()
        images = {}
        for version in ("v1", "v2"):
            request = BuildRequest("bench", version, root / "out", Images(python=docker_env.base_image))
            images[version] = build_service(client, ServiceSpec("app", plain_app(root / version, marker=version),
                                                                8000), request, settings=settings)
        repo = sample_repo(root / "shop", {s: [] for s in services})
        config = repo / "devops_orchestra.yaml"
        config.write_text(config.read_text().replace("analysis_interval: 1s", f"analysis_interval: {args.pause}s")
                          + "observability:\n  tools: []\n")
        redis = Redis.from_url(url)
        try:
            first = Run(requested_by="bench", repo=str(repo), services=services, env=ENV)
            ctx = AgentContext(run=first, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                               config=load_config(repo), actor="deploy")
            assert deploy_agent.run(ctx, images={s: images["v1"] for s in services}, client=client).passed
            anchor_image = {**images["v1"], "version": "v3"}
            rows = [("scheduled checks (ours)", measure(redis, settings, repo, PACED, services, images["v2"])),
                    ("sleeping in the job (anchor)", measure(redis, settings, repo, SLEEPING, services, anchor_image))]
        finally:
            stop_deployed(client, settings.workdir)
            client.close()
    steps = 2  # pauses per run: at 10 % and at 50 %
    print(f"\n{args.runs} concurrent canary runs (steps 10/50/100, {args.pause:.0f}s pauses), one worker\n")
    print(f"| {'design':<28} | runs in flight | request → first stage p50 | max | all done | worker busy per run "
          "| failed |")
    print(f"|{'-' * 30}|---------------:|--------------------------:|----:|---------:|--------------------:|-------:|")
    for name, r in rows:
        print(f"| {name:<28} | {r['in_flight']:>14.0f} | {r['first_p50']:>24.2f}s | {r['first_max']:.1f}s "
              f"| {r['total']:>7.1f}s | {r['busy']:>18.2f}s | {r['failed']:>6.0f} |")
    print(f"\nthe anchor holds the worker at least {steps} x {args.pause:.0f}s = {steps * args.pause:.0f}s per run "
          "for its pauses alone")


if __name__ == "__main__":
    main()
