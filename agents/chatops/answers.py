"""Answers to "why did prod roll back?", "what's running in staging?" and the like.

Every answer is built from facts read back from the event log (EventBus) and the
run store (RunStore): the run id, the version, the metric with its value against
the threshold, the time, who asked and who approved. With an LLM the prose is
written from those facts only and must contain them; otherwise a template.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis import Redis

from agents.chatops import texts, tolerated
from agents.chatops.crashlog import redact, summarize
from agents.chatops.prose import Summarizer, prose, writer_for
from agents.deploy.targets.state import all_live, releases
from agents.observability.judge import format_value
from orchestra.errors import NotFound
from orchestra.events import Event, EventBus, EventType
from orchestra.ids import RUN_ID
from orchestra.intents import Intent, IntentKind
from orchestra.settings import Settings
from orchestra.store import Audit, Run, RunStore

if TYPE_CHECKING:
    from orchestra.llm import LLM

logger = logging.getLogger(__name__)

RECENT_RUNS = 50
RECENT_EVENTS = 2000
_ROLLBACK_WORDS = ("roll", "revert", "undo")
CRASH_TAIL = 5


@dataclass(frozen=True)
class Answer:
    """The text shown to the user and the facts it was built from."""

    text: str
    facts: dict[str, Any] = field(default_factory=dict)
    source: str = "template"  # template | llm


def answer(intent: Intent, *, redis: Redis, settings: Settings,
           llm: Summarizer | LLM | None = None) -> Answer:
    """Answer an explain / status / history question from the event log.

    Without ``llm`` the product's LLM is used when ANTHROPIC_API_KEY is set; otherwise a template.
    """
    facts = gather(intent, redis=redis)
    draft = render(facts)
    writer = writer_for(llm, settings, redis)
    if writer is None or not facts.get("found"):
        return Answer(text=draft, facts=facts)
    text = prose(writer, intent, facts, draft, audit=Audit(redis))
    if text is None:
        return Answer(text=draft, facts=facts)
    return Answer(text=text, facts=facts, source="llm")


def gather(intent: Intent, *, redis: Redis) -> dict[str, Any]:
    """The facts for ``intent``: a plain JSON-able dict with a ``topic`` key."""
    store, bus = RunStore(redis), EventBus(redis)
    named = RUN_ID.search(intent.text)
    if named:
        return named_run_facts(store, bus, named.group(0))
    if intent.kind == IntentKind.STATUS:
        return running_facts(store, bus, env=intent.env, service=intent.service)
    wants_rollback = any(w in intent.text.lower() for w in _ROLLBACK_WORDS)
    runs = matching_runs(store, env=intent.env, service=intent.service)
    if wants_rollback:
        return rollback_facts(bus, runs, env=intent.env, service=intent.service)
    if tolerated.asks(intent.text):  # "why was that test ignored?"
        return tolerated.facts(bus, runs, env=intent.env, service=intent.service)
    if intent.kind == IntentKind.EXPLAIN and intent.strategy:  # "why did it go canary?"
        return route_facts(bus, runs, strategy=intent.strategy, env=intent.env, service=intent.service)
    return last_run_facts(bus, runs, env=intent.env, service=intent.service,
                          deploys_only=intent.kind == IntentKind.HISTORY)


def matching_runs(store: RunStore, *, env: str | None, service: str | None) -> list[Run]:
    """Recent runs (newest first) in ``env`` touching ``service`` (either may be None)."""
    return [r for r in store.recent(RECENT_RUNS)
            if (env is None or r.env == env) and (service is None or service in r.services)]


def named_run_facts(store: RunStore, bus: EventBus, run_id: str) -> dict[str, Any]:
    """Facts of the run the question names by id."""
    try:
        run = store.get(run_id)
    except NotFound:
        return {"topic": "run", "found": False, "run_id": run_id}
    return last_run_facts(bus, [run], env=run.env, service=None, deploys_only=False)


def rollback_facts(bus: EventBus, runs: list[Run], *, env: str | None, service: str | None) -> dict[str, Any]:
    """The newest rollback among ``runs``, with the numbers that caused it."""
    for run in runs:
        events = bus.replay(run.id)
        rollbacks = [e for e in events if e.type == EventType.ROLLBACK_EVENT]
        if rollbacks:
            facts = run_facts(run, events)
            detail = with_refs(bus.redis, rollback_detail(rollbacks[-1]))
            facts.update(topic="rollback", found=True, rollback=detail)
            return facts
    return {"topic": "rollback", "found": False, "env": env, "service": service}


def route_facts(bus: EventBus, runs: list[Run], *, strategy: str, env: str | None,
                service: str | None) -> dict[str, Any]:
    """The newest run whose risk route chose ``strategy`` (else the newest route), with its inputs and why."""
    found: tuple[Run, list[Event], Event] | None = None
    for run in runs:
        events = bus.replay(run.id)
        routes = [e for e in events if e.type == EventType.ROUTE_DECIDED]
        if routes and (found is None or (routes[-1].data.get("chosen") or {}).get("strategy") == strategy):
            found = (run, events, routes[-1])
            if (routes[-1].data.get("chosen") or {}).get("strategy") == strategy:
                break
    if found is None:
        return {"topic": "route", "found": False, "env": env, "service": service}
    run, events, route = found
    facts = run_facts(run, events)
    keys = ("risk", "reasons", "requested", "chosen", "default", "policy", "why", "summary", "nothing_to_do")
    facts.update(topic="route", found=True, asked_about=strategy, route={k: route.data.get(k) for k in keys})
    return facts


def last_run_facts(bus: EventBus, runs: list[Run], *, env: str | None, service: str | None,
                   deploys_only: bool) -> dict[str, Any]:
    """The newest run (a deploy when ``deploys_only``), its outcome and what it did."""
    for run in runs:
        if deploys_only and run.kind not in ("deploy", "rollback"):
            continue
        events = bus.replay(run.id)
        facts = run_facts(run, events)
        facts.update(topic="run", found=True)
        rollbacks = [e for e in events if e.type == EventType.ROLLBACK_EVENT]
        if rollbacks:
            facts["rollback"] = with_refs(bus.redis, rollback_detail(rollbacks[-1]))
        return facts
    return {"topic": "run", "found": False, "env": env, "service": service}


def run_facts(run: Run, events: list[Event]) -> dict[str, Any]:
    """Who asked, who approved, when, what versions, how it ended."""
    approvals = [e for e in events if e.type == EventType.APPROVAL_GRANTED]
    approver = (approvals[-1].data.get("approver") or approvals[-1].actor) if approvals else None
    failures = [e for e in events if e.type in (EventType.STAGE_FAILED, EventType.DEPLOYMENT_FAILED)]
    return {
        "run_id": run.id, "kind": run.kind, "env": run.env, "services": list(run.services),
        "ref": run.ref, "commit": run.commit, "status": str(run.status), "stage": run.stage,
        "requested_by": run.requested_by, "approved_by": approver,
        "reason": redact(run.reason) if run.reason else None,
        "started_at": _iso(run.created_at), "finished_at": _iso(run.finished_at),
        "versions": _versions(events), "refs": _refs(events),
        "failure": None, "crash": None,
        **(_failure(failures[-1]) if failures else {}),
    }


def _failure(event: Event) -> dict[str, Any]:
    """The failure's first line, and a crash-log summary when a container log follows it."""
    head, _, log = _failure_text(event).partition("\n")
    out: dict[str, Any] = {"failure": redact(head)}
    if log.strip():
        summary = summarize(log, tail=CRASH_TAIL)
        out["crash"] = {"error": summary.error, "tail": summary.tail, "lines": summary.total_lines}
    return out


def rollback_detail(event: Event) -> dict[str, Any]:
    """The numbers of one rollback_event, with the value and threshold formatted for people."""
    d = event.data
    metric = d.get("metric")
    detail = {k: d.get(k) for k in ("service", "env", "metric", "value", "threshold", "baseline_value",
                                    "window_s", "from_version", "from_ref", "to_version", "to_ref", "step", "weight",
                                    "automatic", "reason", "verdict")}
    detail["at"] = _iso(event.ts)
    detail["by"] = event.actor
    if metric and d.get("value") is not None:
        detail["value_text"] = format_value(metric, d["value"])
    if metric and d.get("threshold") is not None:
        detail["threshold_text"] = format_value(metric, d["threshold"])
    if metric and d.get("baseline_value") is not None:
        detail["baseline_text"] = format_value(metric, d["baseline_value"])
    return detail


def with_refs(redis: Redis, detail: dict[str, Any]) -> dict[str, Any]:
    """A rollback's versions with the refs they were deployed from, from the release history when the
    event does not say (an automatic rollback names versions only)."""
    if detail.get("service") and detail.get("env"):
        known = {r.version: r.ref for r in releases(redis, detail["service"], detail["env"]) if r.ref}
        for side in ("from", "to"):
            detail[f"{side}_ref"] = detail.get(f"{side}_ref") or known.get(str(detail.get(f"{side}_version")))
    return detail


def running_facts(store: RunStore, bus: EventBus, *, env: str | None, service: str | None) -> dict[str, Any]:
    """What is live per service and environment: the deploy target's live state, else the event log."""
    rows = live_state_rows(store, env=env, service=service) or event_rows(store, bus, env=env, service=service)
    return {"topic": "status", "found": bool(rows), "env": env, "service": service, "running": rows}


def live_state_rows(store: RunStore, *, env: str | None, service: str | None) -> list[dict[str, Any]]:
    """Rows from agents.deploy.targets.state (versions, weights, who ran the last change)."""
    runs: dict[str, Run | None] = {}
    rows = []
    for state in all_live(store.redis):
        if state.current is None or (env and state.env != env) or (service and state.service != service):
            continue
        run = _cached_run(store, runs, state.run_id) if state.run_id else None
        rows.append({"service": state.service, "env": state.env, "version": state.current.version,
                     "ref": state.current.ref, "run_id": state.run_id, "since": _iso(state.updated_at),
                     "weights": state.weights, "by": run.requested_by if run else "unknown", "via": state.last_action,
                     "previous": state.previous.version if state.previous else None, "url": state.url,
                     "runtime": state.runtime, "location": state.location, "approximate": state.approximate})
    return rows


def event_rows(store: RunStore, bus: EventBus, *, env: str | None, service: str | None) -> list[dict[str, Any]]:
    """Rows from the newest deploy and rollback events (when no live state is kept)."""
    live: dict[tuple[str, str], dict[str, Any]] = {}
    runs: dict[str, Run | None] = {}
    for event in bus.recent(RECENT_EVENTS):
        if event.type not in (EventType.DEPLOYMENT_SUCCEEDED, EventType.ROLLBACK_EVENT):
            continue
        run = _cached_run(store, runs, event.run_id)
        ev_env = event.data.get("env") or (run.env if run else None)
        ref = event.data.get("to_ref" if event.type == EventType.ROLLBACK_EVENT else "ref")
        for svc, version in _live_versions(event, run):
            if (env and ev_env != env) or (service and svc != service):
                continue
            live[(svc, ev_env or "?")] = {"service": svc, "env": ev_env, "version": version, "ref": ref,
                                          "run_id": event.run_id, "since": _iso(event.ts),
                                          "by": run.requested_by if run else event.actor,
                                          "via": "rollback" if event.type == EventType.ROLLBACK_EVENT
                                          else "deploy"}
    return sorted(live.values(), key=lambda r: (r["env"] or "", r["service"]))


def render(facts: dict[str, Any]) -> str:
    """The templated answer (also the draft the LLM rewrites)."""
    if facts.get("topic") == "tests":
        return tolerated.render(facts)
    if not facts.get("found"):
        return texts.nothing_found(facts)
    if facts["topic"] == "status":
        return texts.status(facts)
    if facts["topic"] == "route":
        return texts.route(facts)
    if facts["topic"] == "rollback" or facts.get("rollback"):
        return texts.rollback(facts)
    return texts.run(facts)


def _versions(events: list[Event]) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in events:
        if e.type in (EventType.BUILD_READY, EventType.DEPLOYMENT_TRIGGERED, EventType.DEPLOYMENT_SUCCEEDED):
            svc, version = e.data.get("service"), e.data.get("version") or e.data.get("tag")
            if svc and version:
                out[str(svc)] = str(version)
    return out


def _refs(events: list[Event]) -> dict[str, str]:
    """The ref each service's version was asked for by, where it was not the commit itself."""
    return {str(e.data["service"]): str(e.data["ref"]) for e in events
            if e.type == EventType.DEPLOYMENT_TRIGGERED and e.data.get("service") and e.data.get("ref")}


def _live_versions(event: Event, run: Run | None) -> list[tuple[str, str]]:
    d = event.data
    if event.type == EventType.ROLLBACK_EVENT:
        version = d.get("to_version")
    else:
        version = d.get("version") or d.get("tag") or d.get("image")
    services = [d["service"]] if d.get("service") else (run.services if run else [])
    return [(str(s), str(version)) for s in services if version]


def _failure_text(event: Event) -> str:
    d = event.data
    return str(d.get("reason") or d.get("error") or d.get("summary") or d.get("message") or event.type)


def _cached_run(store: RunStore, cache: dict[str, Run | None], run_id: str) -> Run | None:
    if run_id not in cache:
        try:
            cache[run_id] = store.get(run_id)
        except NotFound:  # a run trimmed from the store: the event still counts
            cache[run_id] = None
    return cache[run_id]


def _iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else None
