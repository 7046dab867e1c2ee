"""The words of explain's templated answers, in one place."""
from __future__ import annotations

from typing import Any


def _who(facts: dict[str, Any]) -> str:
    asked = f"requested by {facts.get('requested_by') or 'unknown'}"
    approver = facts.get("approved_by")
    return f"{asked}, approved by {approver}" if approver else f"{asked}, no approval needed or recorded"


def _scope(facts: dict[str, Any]) -> str:
    parts = [p for p in (facts.get("service"), facts.get("env") and f"in {facts['env']}") if p]
    return " ".join(parts) if parts else "anywhere"


def named(version: object, ref: object = None) -> str:
    """``3f9c2ab (hotfix-v2)``: a version with the ref it was asked by, when there was one."""
    return f"{version} ({ref})" if ref else str(version)


def nothing_found(facts: dict[str, Any]) -> str:
    topic = facts.get("topic")
    if topic == "rollback":
        return f"I found no rollback {_scope(facts)} in the recent event log."
    if topic == "route":
        return f"I found no run {_scope(facts)} whose path was decided from its risk in the recent event log."
    if facts.get("run_id"):
        return f"I found no run {facts['run_id']}."
    if topic == "status":
        return f"Nothing is recorded as running {_scope(facts)}: no deploy has succeeded there yet."
    return f"I found no run {_scope(facts)} in the recent event log."


def rollback(facts: dict[str, Any]) -> str:
    rb = facts.get("rollback") or {}
    services = rb.get("service") or ", ".join(facts.get("services") or []) or "the service"
    env = rb.get("env") or facts.get("env")
    lines = [f"{services} in {env} was rolled back at {rb.get('at')} (run {facts['run_id']}, "
             f"{_who(facts)})."]
    if rb.get("metric"):
        line = (f"Why: {rb['metric']} was {rb.get('value_text', rb.get('value'))} against a threshold of "
                f"{rb.get('threshold_text', rb.get('threshold'))}")
        if rb.get("baseline_text"):
            line += f" (baseline {rb['baseline_text']})"
        if rb.get("window_s"):
            line += f", over a {rb['window_s']:.0f}s window"
        lines.append(line + ".")
    if rb.get("reason"):
        lines.append(f"{'Judge' if rb.get('metric') else 'Reason'}: {rb['reason']}")
    lines.append(_versions_line(rb))
    if rb.get("automatic") is False:
        lines.append(f"The rollback was asked for by {facts.get('requested_by') or 'unknown'}, not automatic.")
    elif rb.get("automatic"):
        lines.append("The rollback was automatic.")
    return "\n".join(line for line in lines if line)


def route(facts: dict[str, Any]) -> str:
    """Why a run took its path: the risk, the policy, the ask and the choice, from its route_decided event."""
    rt = facts.get("route") or {}
    services = ", ".join(facts.get("services") or []) or "no service"
    head = f"Run {facts['run_id']} ({services} to {facts.get('env')}, {_who(facts)})"
    if rt.get("nothing_to_do"):
        return f"{head} built and deployed nothing: {rt['summary']}"
    went = (rt.get("chosen") or {}).get("strategy") or "?"
    lines = [f"{head} went {went}: {rt.get('summary')}.",
             f"The change was {rt.get('risk')} risk: {'; '.join(rt.get('reasons') or []) or 'no reason given'}."]
    if rt.get("requested"):
        lines.append(f"{rt['requested']} was asked for.")
    if facts.get("asked_about") and facts["asked_about"] != went:
        lines.append(f"No recent run went {facts['asked_about']}; this is the newest decided path.")
    return "\n".join(lines)


def _versions_line(rb: dict[str, Any]) -> str:
    step = ""
    if rb.get("step") is not None:
        step = f" at canary step {rb['step']}"
        if rb.get("weight") is not None:
            step += f" ({rb['weight']}% of traffic)"
    if rb.get("from_version") or rb.get("to_version"):
        return (f"Traffic went from {named(rb.get('from_version') or '?', rb.get('from_ref'))} back to "
                f"{named(rb.get('to_version') or '?', rb.get('to_ref'))}{step}.")
    return ""


def run(facts: dict[str, Any]) -> str:
    services = ", ".join(facts.get("services") or []) or "no service"
    lines = [f"Run {facts['run_id']} ({facts.get('kind')} of {services} to {facts.get('env')}), "
             f"{_who(facts)}, started {facts.get('started_at')}: {facts.get('status')}."]
    versions, refs = facts.get("versions") or {}, facts.get("refs") or {}
    if versions:
        shown = ", ".join(f"{s} {named(v, refs.get(s))}" for s, v in sorted(versions.items()))
        lines.append(f"Versions: {shown}.")
    if facts.get("finished_at"):
        lines.append(f"Finished {facts['finished_at']}.")
    if facts.get("failure"):
        lines.append(f"What failed: {facts['failure']}")
        lines += crash(facts.get("crash"))
    elif facts.get("reason"):
        lines.append(f"Reason: {facts['reason']}")
    if facts.get("rollback"):
        lines.append(rollback(facts))
    return "\n".join(lines)


def crash(summary: dict[str, Any] | None) -> list[str]:
    if not summary:
        return []
    lines = [f"Container log ({summary['lines']} lines): {summary['error'] or 'no error line'}",
             "Last lines:"]
    return lines + [f"    {line}" for line in summary["tail"]]


def status(facts: dict[str, Any]) -> str:
    rows = facts.get("running") or []
    lines = [f"Running {_scope(facts)}:"]
    for r in rows:
        split = ""
        if len(r.get("weights") or {}) > 1 or (r.get("weights") or {}).get(r["version"], 100) != 100:
            split = " [" + ", ".join(f"{v} {w}%" for v, w in r["weights"].items()) + "]"
        lines.append(f"- {r['service']} in {r['env']}: {named(r['version'], r.get('ref'))}{split} since {r['since']} "
                     f"(run {r['run_id']}, {r['via']} by {r['by']}){where(r)}")
    return "\n".join(lines)


RUNTIMES = {"docker": "on this host", "kubernetes": "on Kubernetes", "ecs": "on ECS", "ec2": "on EC2",
            "lambda": "on Lambda"}


def where(row: dict[str, Any]) -> str:
    """Where a live service runs, when the row says (the deploy target's live state): ``; on ECS …``."""
    if "runtime" not in row:
        return ""
    place = " ".join(p for p in (RUNTIMES.get(row["runtime"], f"on {row['runtime']}"), row.get("location")) if p)
    split = ", split by replica ratio (approximate)" if row.get("approximate") else ""
    return f"; {place} at {row['url']}{split}"
