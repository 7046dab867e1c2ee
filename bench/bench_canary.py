"""Benchmark canary analysis on a fault-injection set; prints a table, side by side with a threshold rule.

    .venv/bin/python bench/bench_canary.py [--rounds 1] [--interval 10] [--intervals 3] [--rate 30]

One baseline (v1) and a set of canaries (healthy ones, and faulty ones of several kinds and sizes)
run as processes, each canary behind its own nginx edge with 20% of the traffic, scraped every
second by a real Prometheus, under a bounded load. Every service has 1% background errors, as
real services do. Both rules then judge the same recorded metrics:

- canary judge: agents.observability.canary (Mann-Whitney U canary vs baseline with tolerances, plus the
  config's rollback thresholds), at the end of each analysis interval; a fail rolls back;
- threshold rule: the canary's error rate > 2% or p99 > 500 ms or CPU > 90% (the config's alert
  defaults) over the last 5 s, checked every second; a breach rolls back.

Reported per rule: faulty canaries caught, healthy canaries wrongly rolled back, and seconds from
the fault's start (the canary taking traffic) to 100% of traffic on the old version (decision time
plus the measured nginx switch). Bounded: about a minute per round.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from agents.deploy.targets.edge import Backend, Edge  # noqa: E402
from agents.observability.canary import CanaryStep, evaluate_step  # noqa: E402
from agents.observability.judge import Verdict  # noqa: E402
from agents.observability.metrics import Prometheus, Selector, Target, metric_queries  # noqa: E402
from agents.observability.policy import Policy, default_specs  # noqa: E402
from tests.support.fault_app import fault_app  # noqa: E402
from tests.support.loadgen import background_load  # noqa: E402
from tests.support.prometheus import prometheus_server  # noqa: E402
from tests.support.services import free_port  # noqa: E402

BASE = {"base_latency_ms": 20, "error_rate": 0.01}
CANARY_WEIGHT = 20
THRESHOLDS = {"error_rate": 0.02, "latency_p99": 0.5, "cpu": 90.0}


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # healthy | errors | latency | leak
    size: str
    faults: dict[str, float]

    @property
    def faulty(self) -> bool:
        return self.kind != "healthy"

    def explained_by(self, metric: str | None) -> bool:
        """Whether a rollback on ``metric`` is a rollback for this fault (not for noise elsewhere)."""
        return metric in {"errors": ("error_rate",), "latency": ("latency_p99",),
                          "leak": ("memory_growth", "memory")}.get(self.kind, ())


CASES = [
    *[Case(f"healthy-{i}", "healthy", "-", {}) for i in range(1, 5)],
    Case("err-2", "errors", "+2 points", {"error_rate": 0.03}),
    Case("err-5", "errors", "+5 points", {"error_rate": 0.06}),
    Case("err-10", "errors", "+10 points", {"error_rate": 0.11}),
    Case("lat-25", "latency", "+25% p99", {"latency_ms": 7.5}),
    Case("lat-50", "latency", "+50% p99", {"latency_ms": 15}),
    Case("lat-100", "latency", "+100% p99", {"latency_ms": 30}),
    Case("leak-16", "leak", "16 KB/request", {"leak_kb": 16}),
    Case("leak-64", "leak", "64 KB/request", {"leak_kb": 64}),
]


@dataclass
class Outcome:
    case: Case
    judge_at: float | None  # seconds after the fault started when the rule rolled back (None: never)
    judge_metric: str | None
    rule_at: float | None
    rule_metric: str | None
    switch_s: float


def canary_judge(prom: Prometheus, case: Case, t0: float, policy: Policy, intervals: int) -> tuple[float | None,
                                                                                                   str | None]:
    """When (if ever) the canary judge fails the canary: at the end of each analysis interval."""
    step = CanaryStep("bench", "bench", "v1", case.name, 1, CANARY_WEIGHT, started_at=t0)
    for k in range(1, intervals + 1):
        at = t0 + k * policy.window_s
        judgement = evaluate_step(prom, step, policy, now=at)
        if judgement.verdict == Verdict.FAIL:
            culprit = judgement.culprit
            return at - t0, culprit.metric if culprit else None
    return None, None


def threshold_rule(prom: Prometheus, case: Case, t0: float, until: float) -> tuple[float | None, str | None]:
    """When (if ever) a plain threshold on the canary's last-5-seconds metrics is crossed, checked every second."""
    queries = metric_queries(Selector("bench", case.name), "5s")
    at = t0 + 5
    while at <= until:
        for metric, limit in THRESHOLDS.items():
            value = prom.value(queries[metric], at=at)
            if value is not None and value > limit:
                return at - t0, metric
        at += 1
    return None, None


def measure_switch(edge: Edge, baseline: int, canary: int, version: str) -> float:
    """Seconds for nginx to put 100% of traffic back on the baseline (reload, new workers serving)."""
    started = time.perf_counter()
    edge.apply([Backend(baseline, "v1", 100), Backend(canary, version, 0)])
    return time.perf_counter() - started


def one_round(args: argparse.Namespace, tmp: Path) -> list[Outcome]:
    policy = Policy(specs=default_specs(), window_s=args.interval, max_wait_s=0, min_requests=50)
    with ExitStack() as stack:
        baseline = stack.enter_context(fault_app("v1", **BASE))
        ports = {c.name: stack.enter_context(fault_app(c.name, **{**BASE, **c.faults})) for c in CASES}
        targets = [Target(f"127.0.0.1:{baseline}", "bench", "v1")] + \
                  [Target(f"127.0.0.1:{p}", "bench", name) for name, p in ports.items()]
        prom = stack.enter_context(prometheus_server(targets))
        prom.wait_scraped(targets)
        edges = {}
        for case in CASES:
            edge = Edge(tmp / f"edge-{case.name}", free_port(), name=case.name)
            edge.apply([Backend(baseline, "v1", 100 - CANARY_WEIGHT), Backend(ports[case.name], case.name,
                                                                                CANARY_WEIGHT)])
            stack.callback(edge.stop)
            edges[case.name] = edge
        duration = args.interval * args.intervals + 2
        t0 = time.time()  # the fault starts: the canaries take traffic
        with ExitStack() as loads:
            for edge in edges.values():
                loads.enter_context(background_load(edge.url + "/", seconds=duration + 5, rate=args.rate,
                                                    concurrency=3))
            time.sleep(duration)  # the bench's observation window (a bounded run, not a poll)
        switches = {c.name: measure_switch(edges[c.name], baseline, ports[c.name], c.name) for c in CASES}
        outcomes = []
        for case in CASES:
            judged = canary_judge(prom.client, case, t0, policy, args.intervals)
            ruled = threshold_rule(prom.client, case, t0, t0 + args.interval * args.intervals)
            outcomes.append(Outcome(case, *judged, *ruled, switches[case.name]))
        return outcomes


def _cell(at: float | None, metric: str | None, switch: float) -> str:
    return f"rolled back {at + switch:5.1f}s ({metric})" if at is not None else "promoted"


def report(outcomes: list[Outcome], args: argparse.Namespace) -> None:
    print(f"\nCanary at {CANARY_WEIGHT}% of {args.rate:g} req/s, analysis every {args.interval:g}s "
          f"x {args.intervals}; baseline and canaries with 1% background errors, "
          "base latency 20 ms (p99 about 30 ms)\n")
    print(f"{'case':<10} {'fault':<14} | {'canary judge (Mann-Whitney + thresholds)':<44} | "
          f"{'plain threshold rule':<36}")
    print("-" * 112)
    for o in outcomes:
        print(f"{o.case.name:<10} {o.case.size:<14} | {_cell(o.judge_at, o.judge_metric, o.switch_s):<44} | "
              f"{_cell(o.rule_at, o.rule_metric, o.switch_s):<36}")
    print("-" * 112)
    faulty = [o for o in outcomes if o.case.faulty]
    healthy = [o for o in outcomes if not o.case.faulty]
    for label, at in (("canary judge", "judge_at"), ("threshold rule", "rule_at")):
        metric = "judge_metric" if at == "judge_at" else "rule_metric"
        caught = [o for o in faulty if getattr(o, at) is not None]
        right = [o for o in caught if o.case.explained_by(getattr(o, metric))]
        wrong = [o for o in healthy if getattr(o, at) is not None]
        times = [getattr(o, at) + o.switch_s for o in right]
        median = f"{statistics.median(times):.1f}s" if times else "-"
        print(f"{label:<15} caught {len(caught)}/{len(faulty)} faulty ({len(right)} on the faulty metric), "
              f"wrongly rolled back {len(wrong)}/{len(healthy)} healthy; fault start -> 100% on old version "
              f"(caught on the faulty metric): median {median}"
              + (f", min {min(times):.1f}s, max {max(times):.1f}s" if times else ""))
    switches = [o.switch_s for o in outcomes]
    print(f"nginx switch to 100% old (reload until new workers serve): median {statistics.median(switches):.2f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole set (fresh processes)")
    parser.add_argument("--interval", type=float, default=10.0, help="analysis interval, seconds")
    parser.add_argument("--intervals", type=int, default=3, help="analysis intervals before promotion")
    parser.add_argument("--rate", type=float, default=30.0, help="requests/s per service edge")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 5 or not 5 <= args.interval <= 60 or not 1 <= args.intervals <= 6:
        parser.error("keep it bounded: 1-5 rounds, 5-60 s intervals, 1-6 intervals")
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="bench-canary-") as tmp:
        for r in range(args.rounds):
            outcomes += one_round(args, Path(tmp) / f"round-{r}")
    report(outcomes, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
