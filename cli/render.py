"""Events as one line of text, for the terminal (`orchestra run`, `orchestra events`)."""
from __future__ import annotations

import time

from orchestra.events import Event, EventType


def describe(event: Event) -> str:
    """What happened, in a few words: the summary, reason or message an event carries."""
    data = event.data
    if event.type == EventType.RUN_FINISHED:
        return f"{data.get('status')}: {data.get('reason')}"
    if "passed" in data and "summary" in data:
        return f"{'passed' if data['passed'] else 'FAILED'}: {data['summary']}"
    for key in ("reason", "message", "summary", "verdict"):
        if data.get(key):
            return str(data[key])
    if event.type in (EventType.RUN_REQUESTED, EventType.CODE_PUSH):
        ref = f"@{data['ref']}" if data.get("ref") else ""
        return f"{data.get('kind')} {','.join(data.get('services', []))}{ref} to {data.get('env')} " \
               f"asked by {event.actor}"
    if event.type == EventType.STAGE_STARTED:
        return f"{data.get('stage')} started"
    return ", ".join(f"{k}={v}" for k, v in list(data.items())[:4])


def line(event: Event, *, with_run: bool = False) -> str:
    """``HH:MM:SS [run] type  actor  description``."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
    run = f"{event.run_id} " if with_run else ""
    return f"{stamp} {run}{event.type.value:<22} {event.actor:<10} {describe(event)}"
