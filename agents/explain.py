"""Answers to "why did prod roll back?", "what's running in staging?" and the like.

Every answer is built from facts read back from the event log (EventBus) and the
run store (RunStore): the run id, the version, the metric with its value against
the threshold, the time, who asked and who approved. With an LLM the prose is
written from those facts only and must contain them; otherwise a template.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from redis import Redis

from agents import explain_texts as texts
from agents.crashlog import redact
from agents.judge import format_value
from orchestra.errors import NotFound
from orchestra.events import Event, EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.settings import Settings
from orchestra.store import Run, RunStore

if TYPE_CHECKING:
    from orchestra.llm import LLM

logger = logging.getLogger(__name__)

RECENT_RUNS = 50
RECENT_EVENTS = 2000
_ROLLBACK_WORDS = ("roll", "revert", "undo")
RUN_ID = re.compile(r"\br-\d{8}-[0-9a-f]{6}\b")
PROMPT = "explain_run"


class Summarizer(Protocol):
    """What explain needs from an LLM: prose from facts, or None when it cannot."""

    def summarize(self, question: str, facts: dict[str, Any], draft: str) -> str | None: ...


@dataclass(frozen=True)
class Answer:
    """The text shown to the user and the facts it was built from."""

    text: str
    facts: dict[str, Any] = field(default_factory=dict)
    source: str = "template"  # template | llm


class LLMSummarizer:
    """The product's LLM client as a :class:`Summarizer` (prompt ``explain_run``)."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm

    def summarize(self, question: str, facts: dict[str, Any], draft: str) -> str | None:
        from orchestra.llm import LLMError

        variables = {"question": question, "facts": json.dumps(facts, default=str), "draft": draft}
        try:
            return self.llm.text(PROMPT, variables, run_id=facts.get("run_id"), max_tokens=600)
        except LLMError as exc:
            logger.info("explain: no LLM summary (%s); using the template", exc)
            return None


def answer(intent: Intent, *, redis: Redis, settings: Settings,
           llm: Summarizer | LLM | None = None) -> Answer:
    """Answer an explain / status / history question from the event log.

    Without ``llm`` the product's LLM is used when ANTHROPIC_API_KEY is set; otherwise a template.
    """
    facts = gather(intent, redis=redis)
    draft = render(facts)
    writer = _writer(llm, settings, redis)
    if writer is None or not facts.get("found"):
        return Answer(text=draft, facts=facts)
    prose = _llm_prose(writer, intent, facts, draft)
    if prose is None:
        return Answer(text=draft, facts=facts)
    return Answer(text=prose, facts=facts, source="llm")


def _writer(llm: Summarizer | LLM | None, settings: Settings, redis: Redis) -> Summarizer | None:
    if llm is None:
        if not settings.anthropic_api_key:
            return None
        from orchestra.llm import LLM  # the SDK is heavy: only load it when a key is set

        llm = LLM.from_settings(settings, redis=redis)
    return llm if hasattr(llm, "summarize") else LLMSummarizer(llm)  # type: ignore[arg-type]


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
            facts.update(topic="rollback", found=True, rollback=rollback_detail(rollbacks[-1]))
            return facts
    return {"topic": "rollback", "found": False, "env": env, "service": service}


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
            facts["rollback"] = rollback_detail(rollbacks[-1])
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
        "versions": _versions(events),
        "failure": redact(_failure_text(failures[-1])) if failures else None,
    }


def rollback_detail(event: Event) -> dict[str, Any]:
    """The numbers of one rollback_event, with the value and threshold formatted for people."""
    d = event.data
    metric = d.get("metric")
    detail = {k: d.get(k) for k in ("service", "env", "metric", "value", "threshold", "baseline_value",
                                    "window_s", "from_version", "to_version", "step", "weight",
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


def running_facts(store: RunStore, bus: EventBus, *, env: str | None, service: str | None) -> dict[str, Any]:
    """What is live per service and environment, from the newest deploy and rollback events."""
    live: dict[tuple[str, str], dict[str, Any]] = {}
    runs: dict[str, Run | None] = {}
    for event in bus.recent(RECENT_EVENTS):
        if event.type not in (EventType.DEPLOYMENT_SUCCEEDED, EventType.ROLLBACK_EVENT):
            continue
        run = _cached_run(store, runs, event.run_id)
        ev_env = event.data.get("env") or (run.env if run else None)
        for svc, version in _live_versions(event, run):
            if (env and ev_env != env) or (service and svc != service):
                continue
            live[(svc, ev_env or "?")] = {"service": svc, "env": ev_env, "version": version,
                                          "run_id": event.run_id, "since": _iso(event.ts),
                                          "by": run.requested_by if run else event.actor,
                                          "via": "rollback" if event.type == EventType.ROLLBACK_EVENT
                                          else "deploy"}
    rows = sorted(live.values(), key=lambda r: (r["env"] or "", r["service"]))
    return {"topic": "status", "found": bool(rows), "env": env, "service": service, "running": rows}


def render(facts: dict[str, Any]) -> str:
    """The templated answer (also the draft the LLM rewrites)."""
    if not facts.get("found"):
        return texts.nothing_found(facts)
    if facts["topic"] == "status":
        return texts.status(facts)
    if facts["topic"] == "rollback" or facts.get("rollback"):
        return texts.rollback(facts)
    return texts.run(facts)


def required_mentions(facts: dict[str, Any]) -> list[str]:
    """Strings an LLM answer must contain to count as grounded in ``facts``."""
    if facts.get("topic") == "status":
        return [str(r["version"]) for r in facts.get("running", []) if r.get("version")]
    needed = [facts.get("run_id")]
    rb = facts.get("rollback") or {}
    needed += [rb.get("value_text"), rb.get("threshold_text"), rb.get("metric")]
    return [str(n) for n in needed if n]


def _llm_prose(llm: Summarizer, intent: Intent, facts: dict[str, Any], draft: str) -> str | None:
    try:
        prose = llm.summarize(intent.text or intent.kind.value, facts, draft)
    except Exception:
        logger.exception("explain: the LLM summary failed; using the template")
        return None
    if not prose:
        return None
    missing = [m for m in required_mentions(facts) if m not in prose]
    if missing:
        logger.warning("explain: LLM answer left out %s; using the template", missing)
        return None
    return redact(prose)


def _versions(events: list[Event]) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in events:
        if e.type in (EventType.BUILD_READY, EventType.DEPLOYMENT_TRIGGERED, EventType.DEPLOYMENT_SUCCEEDED):
            svc, version = e.data.get("service"), e.data.get("version") or e.data.get("tag")
            if svc and version:
                out[str(svc)] = str(version)
    return out


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
