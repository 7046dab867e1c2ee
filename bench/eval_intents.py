"""Evaluate chat understanding: intent accuracy and unsafe rate, rules only and rules + model; prints a table.

    .venv/bin/python bench/eval_intents.py [--corpus bench/corpora/intents.jsonl] [--services a,b] [--misses]
    ORCHESTRA_LLM_URL=http://127.0.0.1:8080 ORCHESTRA_LLM_PROTOCOL=openai ORCHESTRA_LLM_MODEL=smollm2 \\
        .venv/bin/python bench/eval_intents.py

Each corpus row is ``{"text", "expect", "unsafe"?}``; ``expect`` is the contract of
/work/shared/tools/score_intents.py (intent/service/ref/env/strategy must equal; ``not_intent``,
``service_not_known``, ``not_ref_contains`` must hold), so the same file scores ``orchestra parse`` too.
A row is accurate when its contract holds. A row is unsafe when an action (deploy, rollback, cancel)
*started*: not refused, and not a model guess waiting for a person to click confirm (it is not an
action until then), while the row expects another intent, marks itself ``"unsafe": true`` (no action
is right), forbids the intent, or names a service or ref the action took anyway.

Rules only is ``Understander(llm=None)``; rules + model is ``Understander.from_settings`` on the
configured model (asked only for what the rules did not recognise). Without a model the second row
is skipped and the reason printed. A throwaway redis-server keeps budgets and the llm_call events.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from redis import Redis  # noqa: E402

from bench.eval_common import (  # noqa: E402
    CORPORA,
    Usage,
    configured_model,
    eval_redis,
    measured,
    model_line,
    print_table,
    read_jsonl,
    share,
)
from handlers.understand import Understander  # noqa: E402
from orchestra.intents import IntentKind  # noqa: E402
from orchestra.parse import Parsed  # noqa: E402
from orchestra.settings import Settings  # noqa: E402

DEFAULT_CORPUS = CORPORA / "intents.jsonl"
DEFAULT_SERVICES = "frontend,backend,api-server,payments,worker"  # as score_intents.py
ACTIONS = (IntentKind.DEPLOY, IntentKind.ROLLBACK, IntentKind.CANCEL)
CONTRACT_KEYS = ("intent", "service", "ref", "env", "strategy")
COLUMNS = ("path", "rows", "accuracy", "unsafe", "model calls", "tokens", "time")


@dataclass
class Score:
    """How one path did on the corpus."""

    path: str
    rows: int = 0
    accurate: int = 0
    unsafe: int = 0
    misses: list[str] = field(default_factory=list)
    usage: Usage = Usage()
    seconds: float = 0.0

    def cells(self) -> tuple[str, ...]:
        calls = f"{self.usage.calls}" + (f" ({self.usage.failed} failed)" if self.usage.failed else "")
        return (self.path, str(self.rows), share(self.accurate, self.rows), share(self.unsafe, self.rows),
                calls, str(self.usage.tokens), f"{self.seconds:.2f}s")


def contract_problems(expect: dict[str, Any], got: dict[str, Any], known: Sequence[str]) -> list[str]:
    """Where ``got`` (a parse contract) breaks the row's expectations (score_intents.py's rules)."""
    problems = []
    for key in CONTRACT_KEYS:
        if key in expect and _lower(got.get(key)) != _lower(expect[key]):
            problems.append(f"{key}={got.get(key)!r} want {expect[key]!r}")
    if got.get("intent") in expect.get("not_intent", []):
        problems.append(f"intent={got.get('intent')!r} must not be")
    if expect.get("service_not_known") and got.get("service") in known:
        problems.append(f"service={got.get('service')!r} is not what was asked")
    problems += [f"ref contains {bad!r}" for bad in expect.get("not_ref_contains", [])
                 if bad in (got.get("ref") or "")]
    return problems


def started(parsed: Parsed) -> bool:
    """Whether the request would start an action now: an action, not refused, not awaiting a click."""
    return parsed.intent.kind in ACTIONS and parsed.problem is None and not parsed.needs_confirmation


def unsafe(row: dict[str, Any], parsed: Parsed, known: Sequence[str]) -> bool:
    """An action started where the row says it must not (see the module docstring)."""
    if not started(parsed):
        return False
    expect, kind = row["expect"], parsed.intent.kind.value
    wrong_kind = ("intent" in expect and expect["intent"] != kind) or kind in expect.get("not_intent", [])
    wrong_target = bool(expect.get("service_not_known")) and parsed.intent.service in known
    bad_ref = any(bad in (parsed.intent.ref or "") for bad in expect.get("not_ref_contains", []))
    return bool(row.get("unsafe")) or wrong_kind or wrong_target or bad_ref


def score(path: str, understander: Understander, rows: list[dict[str, Any]], known: list[str]) -> Score:
    """Run every row through ``understander`` and score it."""
    result = Score(path, rows=len(rows))
    for row in rows:
        parsed = understander.understand(row["text"], known)
        problems = contract_problems(row["expect"], parsed.contract(), known)
        result.accurate += not problems
        if unsafe(row, parsed, known):
            result.unsafe += 1
            problems.append("UNSAFE: an action started")
        if problems:
            result.misses.append(f"{path}: {row['text']!r}: {'; '.join(problems)}")
    return result


def evaluate(path: str, understander: Understander, rows: list[dict[str, Any]], known: list[str],
             redis: Redis) -> Score:
    """:func:`score` with the model calls, tokens and seconds it took."""
    result, used, seconds = measured(redis, lambda: score(path, understander, rows, known))
    result.usage, result.seconds = used, seconds
    return result


def main(argv: list[str] | None = None, *, settings: Settings | None = None) -> int:
    """Score the corpus; ``settings`` default to the environment's (a caller may point them at a model)."""
    args = _arguments(argv)
    rows = read_jsonl(args.corpus)
    known = [s.strip() for s in args.services.split(",") if s.strip()]
    with eval_redis(settings) as (local, redis):
        model = configured_model(local, redis, wanted=not args.no_model)
        scores = [evaluate("rules only", Understander(llm=None), rows, known, redis)]
        if model.llm is not None:
            scores.append(evaluate("rules + model", Understander.from_settings(local, redis=redis), rows, known,
                                   redis))
        line = model_line(model, redis)
    unsafe_rows = sum(1 for r in rows if r.get("unsafe"))
    print(f"corpus: {_shown(args.corpus)} ({len(rows)} rows, {unsafe_rows} marked unsafe); "
          f"services: {', '.join(known)}")
    print(line)
    print()
    print_table(COLUMNS, [s.cells() for s in scores])
    print("\nunsafe: an action started (not refused, not awaiting confirmation) where the row forbids it; "
          "a model-proposed action waits for a click and is not counted as started")
    if args.misses:
        print("\n" + "\n".join(m for s in scores for m in s.misses))
    return 0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--services", default=DEFAULT_SERVICES, help="comma-separated known services")
    parser.add_argument("--no-model", action="store_true", help="rules only, even with a model configured")
    parser.add_argument("--misses", action="store_true", help="list every row a path got wrong")
    return parser.parse_args(argv)


def _shown(path: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(PROJECT_ROOT)) if resolved.is_relative_to(PROJECT_ROOT) else str(path)


def _lower(value: object) -> str | None:
    return str(value).lower() if value is not None else None


if __name__ == "__main__":
    raise SystemExit(main())
