"""`orchestra parse`: print the intent the bot would read from a text, one JSON object per input."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from orchestra.errors import OrchestraError
from orchestra.settings import Settings


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("parse", help="show the intent a chat message or slash command becomes")
    parser.add_argument("text", nargs="*", help="the message, e.g. '/deploy frontend hotfix-v2'")
    parser.add_argument("--services", help="comma-separated service names (default: from the config)")
    parser.add_argument("--jsonl", type=Path, help='one {"text": ...} object or plain text per line')
    parser.add_argument("--no-llm", action="store_true", help="rules only, even with ANTHROPIC_API_KEY")
    parser.add_argument("--explain", action="store_true", help="also print why an input was refused")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Parse each input and print its contract as JSON."""
    from handlers.understand import Understander

    texts = _inputs(args)
    services = _services(args, settings)
    understander = Understander.from_settings(settings, use_llm=not args.no_llm)
    for text in texts:
        parsed = understander.understand(text, services)
        out: dict[str, Any] = parsed.contract()
        if args.explain and parsed.problem:
            out["problem"] = parsed.problem
        print(json.dumps(out), flush=True)
    return 0


def _inputs(args: argparse.Namespace) -> list[str]:
    if args.jsonl is not None and args.text:
        raise OrchestraError("give either --jsonl FILE or a TEXT, not both")
    if args.jsonl is None:
        if not args.text:
            raise OrchestraError("nothing to parse", hint="orchestra parse '/deploy frontend hotfix-v2'")
        return [" ".join(args.text)]
    try:
        lines = args.jsonl.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise OrchestraError(f"cannot read {args.jsonl}: {exc.strerror}") from exc
    return [_line_text(line, n, args.jsonl) for n, line in enumerate(lines, 1) if line.strip()]


def _line_text(line: str, number: int, path: Path) -> str:
    if not line.lstrip().startswith("{"):
        return line
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise OrchestraError(f"{path}:{number}: not valid JSON ({exc.msg})",
                             hint='write one {"text": "..."} object per line') from exc
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise OrchestraError(f'{path}:{number}: expected an object with a "text" string')
    return row["text"]


def _services(args: argparse.Namespace, settings: Settings) -> list[str]:
    if args.services is not None:
        return [s.strip() for s in args.services.split(",") if s.strip()]
    from handlers.catalog import Catalog

    return Catalog.from_settings(settings).service_names()
