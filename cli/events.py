"""`orchestra events`: the event log, of everything or of one run; `--follow` keeps reading."""
from __future__ import annotations

import argparse
import json
from itertools import chain

from cli.common import connect, run_events
from cli.render import line
from orchestra.events import Event, EventBus, dead_letters
from orchestra.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("events", help="print events (all runs, or one with --run)")
    parser.add_argument("--run", help="only this run, from its first event")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--count", type=int, default=50, help="how many recent events (default 50)")
    parser.add_argument("--dead", action="store_true", help="the dead-letter stream instead")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    redis = connect(settings)
    if args.dead:
        for entry in dead_letters(redis, args.count):
            print(json.dumps(entry))
        return 0
    if args.run:
        events = run_events(redis, args.run, follow=args.follow)
    else:
        bus = EventBus(redis)
        recent = bus.recent(args.count)
        after = (recent[-1].id if recent else None) or "0"
        events = chain(recent, bus.tail(after=after) if args.follow else [])
    try:
        for event in events:
            print(_format(event, args.json, with_run=not args.run), flush=True)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    return 0


def _format(event: Event, as_json: bool, *, with_run: bool) -> str:
    if as_json:
        return json.dumps(event.model_dump(mode="json"))
    return line(event, with_run=with_run)
