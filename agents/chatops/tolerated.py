"""Why a failing test did not block a run ("why was that test ignored?"), from its test_results event.

The test stage (agents/testing/flaky.py) writes each decision with its inputs: the test, its runs and
failures, each run in the suite or alone, flaky or quarantined, blocking or not. This answers from them.
"""
from __future__ import annotations

import re
from typing import Any

from orchestra.events import EventBus, EventType
from orchestra.store import Run

ASKS = re.compile(r"\btests?\b.*\b(ignored|flaky|quarantined?|let through|allowed|not block|didn'?t block|"
                  r"did not block|pass(ed)? anyway)\b|\b(flaky|quarantined?)\b.*\btests?\b", re.I)
SHOWN = 5


def asks(text: str) -> bool:
    """Whether a question asks why a test did not block."""
    return bool(ASKS.search(text))


def facts(bus: EventBus, runs: list[Run], *, env: str | None, service: str | None) -> dict[str, Any]:
    """The newest run among ``runs`` whose tests let a failing test through, and each such decision."""
    for run in runs:
        results = [e for e in bus.replay(run.id) if e.type == EventType.TEST_RESULTS]
        services = (results[-1].data.get("services") or {}) if results else {}
        let_through = [{"service": name, **d} for name, tested in services.items()
                       for d in (tested.get("decisions") or []) if not d.get("blocking") and d.get("failures")]
        if let_through:
            return {"topic": "tests", "found": True, "run_id": run.id, "env": run.env,
                    "services": list(run.services), "requested_by": run.requested_by,
                    "tests": let_through[:SHOWN], "more": max(0, len(let_through) - SHOWN)}
    return {"topic": "tests", "found": False, "env": env, "service": service}


def render(found: dict[str, Any]) -> str:
    """The templated answer: each test, its verdict and the runs it was decided from."""
    if not found.get("found"):
        where = " ".join(p for p in (found.get("service"), found.get("env") and f"in {found['env']}") if p)
        return f"I found no run {where or 'anywhere'} whose tests let a failing test through."
    lines = [f"Run {found['run_id']} ({', '.join(found['services'])} to {found['env']}, requested by "
             f"{found['requested_by']}) did not block on:"]
    for test in found["tests"]:
        why = ("it is in testing.quarantine" if test["verdict"] == "quarantined" else
               "it passed when re-run alone, and testing.flaky_blocks is off")
        runs = ", ".join(f"{a['outcome']} {a['mode'] if a['mode'] == 'alone' else 'in the suite'}"
                         + (f" ({a['seconds']:.2f}s)" if a.get("seconds") is not None else "")
                         for a in test.get("attempts") or [])
        lines.append(f"• {test['test']} ({test['service']}): {test['verdict']}, failed {test['failures']} of "
                     f"{test['runs']} runs ({runs}); {why}.")
    if found["more"]:
        lines.append(f"… and {found['more']} more.")
    return "\n".join(lines)
