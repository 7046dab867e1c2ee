"""``/orchestra flaky <service>``: the service's flaky tests, from the test stage's record across runs.

The record is :mod:`agents.testing.flaky_record`'s; a test is listed once a run judged it flaky (it failed,
then passed alone), with its failure rate over every run since it first failed, and when it last failed.
"""
from __future__ import annotations

import time

from redis import Redis

from agents.testing import flaky_record
from handlers.catalog import Catalog
from handlers.reply import Reply, ReplyKind, Who
from orchestra.errors import OrchestraError
from orchestra.intents import Intent
from orchestra.repos import resolve_service
from orchestra.settings import Settings

USAGE = "say which service, e.g. `/orchestra flaky {example}`; known services: {known}"
NONE = "No flaky tests recorded for {service}{broken}."
HEAD = "Flaky tests of {service} ({count}):"
LINE = "• {test}: failed {failures} of {runs} runs ({rate:.0%}), judged flaky in {flaky} run(s); last failed {ago} " \
       "(run {run})"
BROKEN = " ({count} test(s) failed in every re-run: broken, not flaky)"
SHOWN = 20


def handle(intent: Intent, who: Who, *, redis: Redis, settings: Settings) -> Reply:
    """The flaky tests of ``intent.service``, most recently failing first."""
    if not intent.service or intent.services:
        known = Catalog.from_settings(settings).service_names()
        raise OrchestraError(USAGE.format(example=known[0] if known else "SERVICE",
                                          known=", ".join(f"`{k}`" for k in known) or "none configured"))
    _, config = resolve_service(intent.service, settings)
    service = config.service(intent.service).name
    tracked = flaky_record.records(redis, config.project.name, service)
    flaky = [r for r in tracked if r.flaky]
    if not flaky:
        broken = sum(1 for r in tracked if r.broken)
        return Reply(ReplyKind.ANSWER, NONE.format(service=service, broken=BROKEN.format(count=broken)
                                                   if broken else ""), public=True,
                     data={"service": service, "tests": []})
    lines = [HEAD.format(service=service, count=len(flaky))]
    lines += [LINE.format(test=r.test, failures=r.failures, runs=r.runs, rate=r.failure_rate, flaky=r.flaky,
                          ago=_ago(r.last_seen), run=r.last_run or "?") for r in flaky[:SHOWN]]
    if len(flaky) > SHOWN:
        lines.append(f"… and {len(flaky) - SHOWN} more")
    return Reply(ReplyKind.ANSWER, "\n".join(lines), public=True,
                 data={"service": service, "tests": [r.__dict__ for r in flaky]})


def _ago(when: float | None) -> str:
    if when is None:
        return "never"
    seconds = max(0, int(time.time() - when))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"
