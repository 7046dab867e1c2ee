"""`orchestra explain [--env E] [--service S] [QUESTION]`: the same answers as in Slack, in the terminal."""
from __future__ import annotations

import argparse
import json

from agents.chatops.answers import answer
from cli.common import connect
from orchestra.errors import OrchestraError
from orchestra.intents import ENVIRONMENTS, Intent, IntentKind
from orchestra.parse import ENV_ALIASES, parse
from orchestra.settings import Settings
from orchestra.store import RunStore

QUESTION_KINDS = (IntentKind.EXPLAIN, IntentKind.STATUS, IntentKind.HISTORY)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain", help="answer why/what/who questions from the event log",
        description="Answer a question about recent runs from the event log, e.g. "
                    "`orchestra explain why did prod roll back?` or `orchestra explain --env staging "
                    "what is running`. Without a question: the last run (in --env / of --service).")
    parser.add_argument("question", nargs="*", help="the question, in plain words")
    parser.add_argument("--env", help="only this environment (production, staging, development)")
    parser.add_argument("--service", help="only this service")
    parser.add_argument("--json", action="store_true", help="print the facts behind the answer as JSON too")
    parser.set_defaults(handler=run)


def build_intent(question: str, *, env: str | None, service: str | None, known: list[str]) -> Intent:
    """The question as an explain / status / history intent; flags win over what the words say."""
    env = canonical_env(env)
    parsed = parse(question, known) if question else None
    kind = parsed.intent.kind if parsed and parsed.intent.kind in QUESTION_KINDS else IntentKind.EXPLAIN
    guessed = parsed.intent if parsed else None
    return Intent(kind=kind, text=question, user="cli", source="cli",
                  env=env or (guessed.env if guessed else None),
                  service=service or (guessed.service if guessed else None))


def canonical_env(env: str | None) -> str | None:
    """``prod`` -> ``production``; an unknown name is an error that lists the known ones."""
    if env is None:
        return None
    if env.lower() not in ENV_ALIASES:
        raise OrchestraError(f"unknown environment {env!r}", hint=f"use one of {', '.join(ENVIRONMENTS)}")
    return ENV_ALIASES[env.lower()]


def run(args: argparse.Namespace, settings: Settings) -> int:
    redis = connect(settings)
    known = sorted({s for r in RunStore(redis).recent(100) for s in r.services} | set(filter(None, [args.service])))
    intent = build_intent(" ".join(args.question).strip(), env=args.env, service=args.service, known=known)
    result = answer(intent, redis=redis, settings=settings)
    print(result.text)
    if args.json:
        print(json.dumps(result.facts, indent=1, default=str))
    return 0 if result.facts.get("found") else 1
