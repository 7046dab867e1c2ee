"""Event bus throughput next to the raw XADD rate of the same Redis, and `orchestra run` to first event.

    .venv/bin/python bench/bench_bus.py [--events N]

Starts its own redis-server on a free loopback port and stops it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestra.events import Consumer, Event, EventBus, EventType  # noqa: E402
from tests.support.services import redis_server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = {"stage": "test", "passed": True, "summary": "9 passed, 0 skipped, coverage 97.8%",
           "counts": {"passed": 9, "failed": 0}}


def raw_xadd(redis: Redis, n: int, *, pipelined: bool) -> float:
    body = {"event": Event(run_id="r-bench", type=EventType.PROGRESS, actor="bench", data=PAYLOAD).to_json()}
    start = time.perf_counter()
    if pipelined:
        for i in range(0, n, 100):
            pipe = redis.pipeline(transaction=False)
            for _ in range(min(100, n - i)):
                pipe.xadd("bench:raw", body)
            pipe.execute()
    else:
        for _ in range(n):
            redis.xadd("bench:raw", body)
    return n / (time.perf_counter() - start)


def bus_publish(redis: Redis, n: int) -> float:
    bus = EventBus(redis, stream="bench:pub")
    start = time.perf_counter()
    for i in range(n):
        bus.emit(f"r-{i % 50}", EventType.PROGRESS, "bench", **PAYLOAD)
    return n / (time.perf_counter() - start)


def bus_round_trip(redis_url: str, n: int) -> float:
    """Publish from one connection while a consumer group member reads and acks on another."""
    publisher = EventBus(Redis.from_url(redis_url), stream="bench:rt")
    consumer = Consumer(EventBus(Redis.from_url(redis_url), stream="bench:rt"), "bench", "c1")
    done = threading.Event()
    seen = 0

    def consume() -> None:
        nonlocal seen
        while seen < n:
            for delivery in consumer.read(count=200, block_ms=500):
                consumer.ack(delivery)
                seen += 1
        done.set()

    thread = threading.Thread(target=consume)
    start = time.perf_counter()
    thread.start()
    for i in range(n):
        publisher.emit(f"r-{i % 50}", EventType.PROGRESS, "bench", **PAYLOAD)
    done.wait(120)
    elapsed = time.perf_counter() - start
    thread.join()
    return n / elapsed


def run_to_first_event(redis_url: str, repeats: int, workdir: Path) -> list[float]:
    env = {**os.environ, "REDIS_URL": redis_url, "ORCHESTRA_WORKDIR": str(workdir)}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "cli", "run", "--repo",
                                 str(ROOT / "examples" / "shop"), "--validate-only"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()  # "run r-..."
        proc.stdout.readline()  # the first event
        times.append(time.perf_counter() - start)
        proc.wait(timeout=300)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with redis_server() as url:
        redis = Redis.from_url(url)
        rows = [
            ("raw XADD, one round trip each", raw_xadd(redis, args.events, pipelined=False)),
            ("raw XADD, pipelined by 100", raw_xadd(redis, args.events, pipelined=True)),
            ("bus publish (global + run stream, MULTI)", bus_publish(redis, args.events)),
            ("bus publish -> group read -> ack", bus_round_trip(url, args.events)),
        ]
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            firsts = run_to_first_event(url, args.runs, Path(tmp))
    single = rows[0][1]
    print(f"\nEvent bus on redis-server (loopback), {args.events} events each\n")
    print(f"{'path':<44} {'events/s':>10} {'vs raw XADD':>12}")
    print("-" * 68)
    for name, rate in rows:
        print(f"{name:<44} {rate:>10,.0f} {rate / single:>11.2f}x")
    print(f"\n`orchestra run` to its first event, {args.runs} runs: median {statistics.median(firsts):.2f}s, "
          f"min {min(firsts):.2f}s, max {max(firsts):.2f}s")


if __name__ == "__main__":
    main()
