"""Benchmark the Slack front end against the local workspace.

Prints three tables:
  1. ack latency p50/p99 of N concurrent slash commands: the real bot process (`orchestra bot`)
     next to a bare Bolt app that only acks, in the same run, and their ratio. Bursts alternate
     between the two apps for several rounds; the ratio reported is the median of the rounds'
     ratios (one burst of 50 on 2 cores swings by 2x, a median of paired rounds does not);
  2. command -> first thread reply (the run's parent message, and its first milestone reply
     written after a real `orchestra worker` ran the first stage), p50/p95;
  3. Slack API calls per run, by method.

    .venv/bin/python bench/bench_slack.py [--concurrent 50] [--runs 5] [--rounds 7]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402

from bot.localslack import start_in_thread  # noqa: E402
from bot.localslack.client import WorkspaceClient  # noqa: E402
from bot.slack.pacer import BURST  # noqa: E402
from orchestra.settings import Settings  # noqa: E402
from orchestra.store import RunStore  # noqa: E402
from tests.support.services import redis_server, wait_for  # noqa: E402
from tests.support.slack_workspace import bot_process, orchestra_process, process_env, thread_of  # noqa: E402

BARE_APP = """
import asyncio, sys
from slack_bolt.async_app import AsyncApp
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.web.async_client import AsyncWebClient
app = AsyncApp(client=AsyncWebClient(token="xoxb-local", base_url=sys.argv[1]))
@app.command("/deploy")
async def deploy(ack):
    await ack()
async def main():
    await AsyncSocketModeHandler(app, app_token="xapp-local").start_async()
asyncio.run(main())
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def ack_latencies(slack: WorkspaceClient, count: int, user: str) -> list[float]:
    """Fire ``count`` /deploy commands at once; the server measures envelope sent -> ack received."""
    services = ["frontend", "backend"]
    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(lambda i: slack.command(f"/deploy {services[i % 2]} main dev", user=user),
                                range(count)))
    missed = [r for r in results if not r["acked"]]
    if missed:
        raise SystemExit(f"{len(missed)} of {count} commands were not acked within 3 s")
    return [float(r["ack_ms"]) for r in results]


def thread_latencies(slack: WorkspaceClient, redis: Redis, runs: int) -> tuple[list[float], list[float], list[str]]:
    """Sequential /deploy commands: time to the parent message and to the first milestone reply."""
    parents, replies, run_ids = [], [], []
    for i in range(runs):
        time.sleep(BURST + 0.1)  # the channel's burst refilled after the previous thread: pacing adds nothing
        started = time.monotonic()
        run_id = _deploy(slack, redis, i)
        wait_for(lambda r=run_id: thread_of(slack, r), timeout=30, interval=0.01, what="the parent message")
        parents.append((time.monotonic() - started) * 1000)
        wait_for(lambda r=run_id: (thread_of(slack, r) or {}).get("replies"), timeout=120, interval=0.01,
                 what="the first thread reply")
        replies.append((time.monotonic() - started) * 1000)
        wait_for(lambda r=run_id: RunStore(redis).get(r).status.finished, timeout=120, what="the end")
        wait_for(lambda r=run_id: "Run " in (thread_of(slack, r) or {"replies": [{"text": ""}]})["replies"][-1]["text"],
                 timeout=30, what="the last reply")
        run_ids.append(run_id)
    return parents, replies, run_ids


def _deploy(slack: WorkspaceClient, redis: Redis, i: int) -> str:
    known = {r.id for r in RunStore(redis).recent(100)}
    slack.command(f"/deploy frontend hotfix-v2 stg --strategy {'canary' if i % 2 else 'rolling'}")
    return str(wait_for(lambda: next((r.id for r in RunStore(redis).recent(5) if r.id not in known), None),
                        what="the run"))


def calls_per_run(slack: WorkspaceClient, run_count: int, since: float) -> dict[str, float]:
    counted = Counter(c["method"] for c in slack.calls() if c["at"] >= since)
    return {method: n / run_count for method, n in sorted(counted.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7, help="paired ack bursts (bare app, then bot)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-slack-", ignore_cleanup_errors=True) as tmp, ExitStack() as stack:
        root = Path(tmp)
        redis_url = stack.enter_context(redis_server())
        repo = root / "shop"
        subprocess.run([str(ROOT / "scripts" / "make-demo-repo"), str(repo)], check=True, capture_output=True)
        subprocess.run(["git", "-C", str(repo), "branch", "-f", "hotfix-v2", "main"], check=True)
        settings = Settings(redis_url=redis_url, workdir=root / "work", repos=(str(repo),))
        redis = Redis.from_url(redis_url)
        bot_ws = start_in_thread()
        bare_ws = start_in_thread()
        stack.callback(bot_ws.stop)
        stack.callback(bare_ws.stop)
        bot_slack, bare_slack = WorkspaceClient(bot_ws.url), WorkspaceClient(bare_ws.url)
        env = process_env(settings, bot_ws.api_url, ORCHESTRA_CACHE_DIR=str(root / "cache"))
        stack.enter_context(bot_process(settings, bot_slack, bot_ws.api_url, root / "bot.log"))
        bare = stack.enter_context(subprocess.Popen([sys.executable, "-c", BARE_APP, bare_ws.api_url]))
        stack.callback(bare.terminate)
        wait_for(lambda: bare_slack.health()["sockets"] >= 1, timeout=20, what="the bare app")

        since = time.time()
        with orchestra_process(["worker"], env, root / "worker.log"):
            parents, replies, run_ids = thread_latencies(bot_slack, redis, args.runs)
        per_run = calls_per_run(bot_slack, len(run_ids), since)
        # No worker from here on: the runs the ack test starts stay queued instead of loading the machine.
        # The bare app first: the bot's own work after its acks (dispatch, relay) must not slow the other.
        rounds = []
        for _ in range(args.rounds):
            bare_ack = ack_latencies(bare_slack, args.concurrent, "U0CAROL")
            bot_ack = ack_latencies(bot_slack, args.concurrent, "U0CAROL")
            rounds.append((bot_ack, bare_ack))
            time.sleep(6)  # the bot's relay and dispatch of this burst settle before the next pair
        report(args, rounds, parents, replies, per_run)
    return 0


def report(args: Any, rounds: list[tuple[list[float], list[float]]], parents: list[float], replies: list[float],
           per_run: dict[str, float]) -> None:
    print(f"\nAck latency, {args.concurrent} concurrent slash commands, {len(rounds)} paired rounds "
          "(ms, envelope sent -> ack received; p50/p99 over all rounds)")
    print(f"{'app':<28}{'p50':>10}{'p99':>10}{'max':>10}")
    bot_all = [v for bot, _ in rounds for v in bot]
    bare_all = [v for _, bare in rounds for v in bare]
    for name, values in (("orchestra bot", bot_all), ("bare Bolt app (ack only)", bare_all)):
        print(f"{name:<28}{percentile(values, 50):>10.1f}{percentile(values, 99):>10.1f}{max(values):>10.1f}")
    p50s = [percentile(bot, 50) / percentile(bare, 50) for bot, bare in rounds]
    p99s = [percentile(bot, 99) / percentile(bare, 99) for bot, bare in rounds]
    print(f"{'ratio bot / bare, median':<28}{statistics.median(p50s):>10.2f}{statistics.median(p99s):>10.2f}")
    print(f"{'ratio bot / bare, range':<28}{f'{min(p50s):.2f}-{max(p50s):.2f}':>10}"
          f"{f'{min(p99s):.2f}-{max(p99s):.2f}':>10}")
    print(f"\nCommand -> thread, {len(parents)} sequential /deploy runs with a real worker (ms)")
    print(f"{'':<28}{'p50':>10}{'p95':>10}")
    print(f"{'parent message posted':<28}{percentile(parents, 50):>10.0f}{percentile(parents, 95):>10.0f}")
    print(f"{'first thread reply':<28}{percentile(replies, 50):>10.0f}{percentile(replies, 95):>10.0f}")
    print("\nSlack API calls per run (whole run, command to finished thread)")
    for method, n in per_run.items():
        print(f"{method:<28}{n:>10.1f}")
    print(f"{'total':<28}{sum(per_run.values()):>10.1f}")
    print(f"(mean first reply {statistics.mean(replies):.0f} ms)")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
