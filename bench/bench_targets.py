"""Deploy and rollback per target, side by side; prints a table.

    flock /tmp/orchestra-docker-tests.lock .venv/bin/python bench/bench_targets.py [--rounds N] [--no-local]

- local (``runtime: docker``), for real: Redis, a Docker engine, the registry and nginx started like the
  tests do; a first deploy, a blue-green deploy of a second version and a rollback, in wall-clock time.
- kubernetes, against kmock on loopback (tests/support/kmock.py, its controllers played by the
  benchmark): the same three steps plus a 3-step canary by replica ratio, counting the API calls the
  target made and splitting the time into waiting for the API server and time spent in our code.
  The mock answers in about a millisecond and its controllers within tens of milliseconds, so these
  figures say nothing about a real cluster's rollout time: that is the pods' start-up.
- ecs and lambda, against a real moto_server on loopback (tests/support/moto.py, the ECS agent, the
  ALB's and Lambda's CloudWatch metrics played by the benchmark through the same API): the same steps,
  the canary judged on CloudWatch with 1 s pauses, counting the target's AWS calls and splitting the
  time into waiting for moto, sleeping between health polls or canary pauses, and our code. moto answers
  in milliseconds and starts nothing, so the figures say nothing about AWS's own rollout time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from redis import Redis  # noqa: E402

from agents.context import AgentContext  # noqa: E402
from agents.deploy import stage as deploy  # noqa: E402
from agents.deploy.targets.kubernetes.readiness import POLL_S  # noqa: E402
from agents.deploy.targets.registry import Targets  # noqa: E402
from orchestra.config import load_config  # noqa: E402
from orchestra.events import EventBus  # noqa: E402
from orchestra.settings import Settings  # noqa: E402
from orchestra.store import Run  # noqa: E402
from tests.support.kmock import CONTEXT, mock_cluster  # noqa: E402
from tests.support.services import redis_server  # noqa: E402

Row = tuple[str, str, str]


def _ctx(repo: Path, settings: Settings, redis: Redis, strategy: str | None = None) -> AgentContext:
    run = Run(requested_by="bench", repo=str(repo), services=["web"], env="staging", strategy=strategy)
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="bench")


def _timed(step: Callable[[], Any], targets: Targets | None = None) -> tuple[float, int, float, float]:
    """(wall s, API calls, API s, s asleep between readiness polls) of one step, the counts from the
    Kubernetes target of ``targets``."""
    target: Any = targets.for_runtime("kubernetes") if targets else None
    before = (target.api.stats.calls, target.api.stats.seconds, target.waited_s) if target else (0, 0.0, 0.0)
    start = time.perf_counter()
    result = step()
    assert result.passed, result.summary
    wall = time.perf_counter() - start
    if target is None:
        return wall, 0, 0.0, 0.0
    return (wall, target.api.stats.calls - before[0], target.api.stats.seconds - before[1],
            target.waited_s - before[2])


def kubernetes_round(samples: dict[str, list[tuple[float, int, float, float]]]) -> None:
    """One round of the four steps against a fresh mock cluster."""
    with tempfile.TemporaryDirectory(prefix="bench-k8s-") as tmp, redis_server() as redis_url, \
            mock_cluster(Path(tmp)) as (mock, _):
        repo = Path(tmp) / "repo"
        repo.mkdir()
        (repo / "devops_orchestra.yaml").write_text(
            "project: {name: shop}\ndeployment:\n  canary: {steps: [25, 50, 100]}\n  services:\n"
            "    - {name: web, runtime: kubernetes, port: 8080, replicas: 4}\nenvironments:\n  staging:\n"
            f"    kubernetes: {{kubeconfig: {mock.kubeconfig('shop')}, context: {CONTEXT}, namespace: shop}}\n")
        settings, redis = Settings(redis_url=redis_url, workdir=Path(tmp) / "work"), Redis.from_url(redis_url)
        image = {v: {"web": {"image": f"registry.example/web:{v}", "version": v}} for v in ("v1", "v2", "v3")}
        with Targets(settings, redis, load_config(repo), "staging") as targets:
            steps = [
                ("first deploy", lambda: deploy.run(_ctx(repo, settings, redis), images=image["v1"],
                                                    targets=targets)),
                ("blue-green deploy", lambda: deploy.run(_ctx(repo, settings, redis), images=image["v2"],
                                                         targets=targets)),
                ("rollback", lambda: deploy.rollback(_ctx(repo, settings, redis), "web", targets=targets)),
                ("canary 25/50/100 by replicas", lambda: deploy.run(
                    _ctx(repo, settings, redis, "canary"), images=image["v3"], pause_s=0,
                    judge=lambda step: "pass", targets=targets)),
            ]
            for name, step in steps:
                samples.setdefault(name, []).append(_timed(step, targets))


def kubernetes_rows(rounds: int) -> list[Row]:
    samples: dict[str, list[tuple[float, int, float, float]]] = {}
    for _ in range(rounds):
        kubernetes_round(samples)
    rows = []
    for name, runs in samples.items():
        wall, api_s, asleep = (statistics.median(r[i] for r in runs) for i in (0, 2, 3))
        rows.append((f"kubernetes (kmock): {name}", f"{runs[0][1]} API calls",
                     f"{wall:.2f} s total: {api_s:.3f} s in the API, {asleep:.2f} s between readiness polls "
                     f"({POLL_S} s apart), {wall - api_s - asleep:.3f} s in our code"))
    return rows


def aws_rows(rounds: int) -> list[Row]:
    """Deploy, blue-green, rollback and a judged canary on the ECS and Lambda targets against moto."""
    from tests.support.moto import Alb, Ecs, Invocations, aws_env, lambda_function, moto_server, platform, reset

    samples: dict[str, list[tuple[float, int, float, float]]] = {}
    pauses: list[float] = []

    def asked(step: Any) -> str:
        """Defers to CloudWatch (with_cloudwatch); counts the pause the strategy slept before asking."""
        pauses.append(step.pause_s)
        return "inconclusive"

    with moto_server() as url, redis_server() as redis_url, tempfile.TemporaryDirectory(prefix="bench-aws-") as tmp, \
            aws_env(url):
        for _ in range(rounds):
            for runtime in ("ecs", "lambda"):
                reset(url)
                repo = Path(tmp) / "repo"
                repo.mkdir(exist_ok=True)
                settings, redis = Settings(redis_url=redis_url, workdir=Path(tmp) / "work"), Redis.from_url(redis_url)
                redis.flushdb()
                if runtime == "ecs":
                    built = platform(url)
                    players: list[Any] = [Ecs(url, built.cluster).start(),
                                          Alb(url, built, requests_per_tick=1000).start()]
                    where = (f"    ecs: {{cluster: shop, region: us-east-1, listener: {built.listener}, "
                             f"subnets: [{built.subnet}], execution_role: '{built.execution_role}'}}\n")
                else:
                    lambda_function(url, "web-staging")
                    players = [Invocations(url, "web-staging").start()]
                    where = "    lambda: {region: us-east-1}\n"
                (repo / "devops_orchestra.yaml").write_text(
                    "project: {name: shop}\ndeployment:\n  canary: {steps: [25, 50, 100]}\n  services:\n"
                    f"    - {{name: web, runtime: {runtime}, port: 8080, replicas: 2}}\nenvironments:\n  staging:\n"
                    + where)
                try:
                    with Targets(settings, redis, load_config(repo), "staging") as targets:
                        for name, step in _aws_steps(repo, settings, redis, targets, asked):
                            samples.setdefault(f"{runtime}: {name}", []).append(
                                _aws_timed(step, targets, runtime, pauses))
                finally:
                    for player in players:
                        player.stop()
    rows = []
    for name, runs in samples.items():
        wall, api_s, asleep = (statistics.median(r[i] for r in runs) for i in (0, 2, 3))
        rows.append((f"{name.split(':')[0]} (moto):{name.split(':', 1)[1]}", f"{runs[0][1]} API calls",
                     f"{wall:.2f} s total: {api_s:.3f} s in moto, {asleep:.2f} s asleep (health polls, canary "
                     f"pauses), {wall - api_s - asleep:.3f} s in our code"))
    return rows


def _aws_steps(repo: Path, settings: Settings, redis: Redis, targets: Targets,
               asked: Callable[[Any], str]) -> list[tuple[str, Callable[[], Any]]]:
    image = {v: {"web": {"image": f"registry.example/web:{v}", "version": v}} for v in ("v1", "v2", "v3")}
    return [
        ("first deploy", lambda: deploy.run(_ctx(repo, settings, redis), images=image["v1"], targets=targets)),
        ("blue-green deploy", lambda: deploy.run(_ctx(repo, settings, redis), images=image["v2"], targets=targets)),
        ("rollback", lambda: deploy.rollback(_ctx(repo, settings, redis), "web", targets=targets)),
        ("canary 25/50/100, CloudWatch judge, 1 s pauses", lambda: deploy.run(
            _ctx(repo, settings, redis, "canary"), images=image["v3"], pause_s=1.0, judge=asked, targets=targets))]


def _aws_timed(step: Callable[[], Any], targets: Targets, runtime: str,
               pauses: list[float]) -> tuple[float, int, float, float]:
    """(wall s, AWS calls, AWS s, s asleep: health polls and canary pauses) of one step on the ECS or
    Lambda target of ``targets``; ``pauses`` collects the canary pauses the step's judge was asked after."""
    target: Any = targets.for_runtime(runtime)
    slept_before, before = target.waited_s, (target.aws.stats.calls, target.aws.stats.seconds)
    pauses.clear()
    start = time.perf_counter()
    result = step()
    assert result.passed, result.summary
    wall = time.perf_counter() - start
    return (wall, target.aws.stats.calls - before[0], target.aws.stats.seconds - before[1],
            target.waited_s - slept_before + sum(pauses))


def local_rows() -> list[Row]:
    from agents.build.dockerfile import Images
    from agents.build.service import BuildRequest, ServiceSpec, build_service
    from tests.support.docker_services import shared_docker, stop_deployed
    from tests.support.sample_apps import plain_app

    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp, redis_server() as redis_url, \
            shared_docker() as env:
        root = Path(tmp)
        settings = Settings(redis_url=redis_url, workdir=root / "work", registry=env.registry,
                            base_image=env.base_image)
        client = env.client()
        images = {}
        for version in ("v1", "v2"):
            path = plain_app(root / version, marker=version)
            request = BuildRequest("shop", version, root / "out", Images(python=env.base_image))
            images[version] = {"web": build_service(client, ServiceSpec("web", path, 8000), request,
                                                    settings=settings)}
        repo = root / "repo"
        repo.mkdir()
        (repo / "devops_orchestra.yaml").write_text(
            "project: {name: shop}\ndeployment:\n  services:\n    - {name: web, port: 18431}\n")
        redis = Redis.from_url(redis_url)
        try:
            rows = []
            for name, step in [
                    ("first deploy", lambda: deploy.run(_ctx(repo, settings, redis), images=images["v1"],
                                                        client=client)),
                    ("blue-green deploy", lambda: deploy.run(_ctx(repo, settings, redis), images=images["v2"],
                                                             client=client)),
                    ("rollback", lambda: deploy.rollback(_ctx(repo, settings, redis), "web", client=client))]:
                wall = _timed(step)[0]
                rows.append((f"local (docker + nginx): {name}", "-", f"{wall:.2f} s (real containers and edge)"))
            return rows
        finally:
            stop_deployed(client, settings.workdir)
            client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds against kmock (medians are shown)")
    parser.add_argument("--no-local", action="store_true", help="skip the local target (no Docker engine)")
    parser.add_argument("--only-aws", action="store_true", help="only the ECS and Lambda targets (against moto)")
    args = parser.parse_args()
    if args.only_aws:
        rows = aws_rows(args.rounds)
    else:
        rows = ([] if args.no_local else local_rows()) + kubernetes_rows(args.rounds) + aws_rows(args.rounds)
    width = max(len(r[0]) for r in rows)
    print(f"{'target: step'.ljust(width)} | {'API calls'.ljust(12)} | time")
    print(f"{'-' * width}-|-{'-' * 12}-|-{'-' * 50}")
    for name, calls, seconds in rows:
        print(f"{name.ljust(width)} | {calls.ljust(12)} | {seconds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
