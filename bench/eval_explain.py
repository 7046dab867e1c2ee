"""Evaluate rollback explanations: do they cite the metric, value, threshold, versions and run; prints a table.

    .venv/bin/python bench/eval_explain.py [--corpus bench/corpora/explain.jsonl] [--no-model] [--show]

Each corpus row is one rollback (service, env, run id, from/to versions, metric, value, threshold,
window, who asked and approved, the canary step) and the question a person asks about it. For each
row a fresh Redis database gets the run store and event log a real deploy would leave (an earlier
healthy deploy, the deploy that was rolled back with its ``rollback_event``, a later deploy of another
service), and the question goes through agents.chatops.answers with and without the model:

- templated answer: the template alone (a summarizer that declines, so no model is asked);
- model prose: the configured model rewrites the template; the product keeps its prose only when it
  contains the required facts (agents.chatops.prose), otherwise the template is shown.

A fact is cited when the answer shown contains it as people read it: the metric's name, its value and
threshold formatted like the judge formats them (6.12%, 812 ms), both versions, and the run id.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from redis import Redis  # noqa: E402

from agents.chatops.answers import Answer, answer  # noqa: E402
from agents.chatops.prose import Summarizer  # noqa: E402
from agents.observability.judge import format_value  # noqa: E402
from bench.eval_common import (  # noqa: E402
    CORPORA,
    Usage,
    configured_model,
    database,
    eval_redis,
    measured,
    model_line,
    print_table,
    read_jsonl,
    share,
)
from orchestra.events import EventBus, EventType  # noqa: E402
from orchestra.intents import Intent, IntentKind  # noqa: E402
from orchestra.llm import LLM  # noqa: E402
from orchestra.settings import Settings  # noqa: E402
from orchestra.store import Run, RunStatus, RunStore  # noqa: E402

DEFAULT_CORPUS = CORPORA / "explain.jsonl"
FACTS_DB = 1  # the seeded run store and event log; db 0 keeps the model's budgets and llm_call events
CITED = ("metric", "value", "threshold", "version", "run")
COLUMNS = ("path", "answers", *(f"cite {c}" for c in CITED), "kept model prose", "model calls", "tokens", "time")


class NoProse:
    """A summarizer that declines: the product shows its templated answer."""

    def summarize(self, question: str, facts: dict[str, Any], draft: str) -> str | None:
        return None


@dataclass
class Tally:
    """What one path's answers cited."""

    path: str
    answers: int = 0
    cited: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CITED, 0))
    kept_prose: int = 0
    shown: list[str] = field(default_factory=list)

    def add(self, row: dict[str, Any], result: Answer) -> None:
        self.answers += 1
        for fact, present in citations(row, result.text).items():
            self.cited[fact] += present
        self.kept_prose += result.source == "llm"
        self.shown.append(f"[{self.path}, {result.source}] {row['question']}\n{result.text}\n")

    def cells(self, used: Usage, seconds: float, model: bool) -> tuple[str, ...]:
        prose = share(self.kept_prose, self.answers) if model else "-"
        calls = str(used.calls) + (f" ({used.failed} failed)" if used.failed else "")
        return (self.path, str(self.answers), *(share(self.cited[c], self.answers) for c in CITED), prose,
                calls, str(used.tokens), f"{seconds:.2f}s")


def citations(row: dict[str, Any], text: str) -> dict[str, bool]:
    """Which of the row's facts ``text`` states, as people read them."""
    metric = row["metric"]
    return {"metric": metric in text, "value": format_value(metric, row["value"]) in text,
            "threshold": format_value(metric, row["threshold"]) in text,
            "version": row["from_version"] in text and row["to_version"] in text, "run": row["run_id"] in text}


def seed(redis: Redis, row: dict[str, Any]) -> None:
    """The run store and event log a deploy that was rolled back leaves, between two unrelated deploys."""
    redis.flushdb()
    _deploy(redis, row, version=row["to_version"], run_id=None)
    run = _deploy(redis, row, version=row["from_version"], run_id=row["run_id"])
    EventBus(redis).emit(run.id, EventType.ROLLBACK_EVENT, "observe", service=row["service"], env=row["env"],
                         metric=row["metric"], value=row["value"], threshold=row["threshold"],
                         window_s=float(row["window_s"]), from_version=row["from_version"],
                         to_version=row["to_version"], step=row.get("step"), weight=row.get("weight"),
                         automatic=True, reason="the canary breached its threshold")
    RunStore(redis).update(run.id, status=RunStatus.FAILED, reason=f"rolled back: {row['metric']}")
    other = {**row, "service": "status-page" if row["service"] != "status-page" else "docs"}
    _finish(redis, _deploy(redis, other, version="v0.0.1", run_id=None), other)


def _deploy(redis: Redis, row: dict[str, Any], *, version: str, run_id: str | None) -> Run:
    fields: dict[str, Any] = {"id": run_id} if run_id else {}
    run = RunStore(redis).create(Run(requested_by=row.get("requested_by", "someone"), repo="examples/shop",
                                     services=[row["service"]], env=row["env"], ref=version, strategy="canary",
                                     **fields))
    bus = EventBus(redis)
    bus.emit(run.id, EventType.RUN_REQUESTED, run.requested_by, services=run.services)
    if row.get("approved_by"):
        bus.emit(run.id, EventType.APPROVAL_GRANTED, row["approved_by"], approver=row["approved_by"])
    bus.emit(run.id, EventType.DEPLOYMENT_TRIGGERED, "deploy", service=row["service"], version=version)
    if run_id is None:
        _finish(redis, run, row)
    return run


def _finish(redis: Redis, run: Run, row: dict[str, Any]) -> None:
    EventBus(redis).emit(run.id, EventType.DEPLOYMENT_SUCCEEDED, "deploy", service=row["service"],
                         version=run.ref, env=row["env"])
    RunStore(redis).update(run.id, status=RunStatus.SUCCEEDED)


def explain_all(path: str, rows: list[dict[str, Any]], writer: Summarizer | LLM, *, facts: Redis,
                settings: Settings) -> Tally:
    """Seed each row's facts and ask its question through the product's answer()."""
    tally = Tally(path)
    for row in rows:
        seed(facts, row)
        intent = Intent(kind=IntentKind.EXPLAIN, service=row["service"], env=row["env"], text=row["question"])
        tally.add(row, answer(intent, redis=facts, settings=settings, llm=writer))
    return tally


def evaluate(path: str, rows: list[dict[str, Any]], writer: Summarizer | LLM, *, redis: Redis,
             settings: Settings, model: bool) -> tuple[Tally, tuple[str, ...]]:
    """One path over the corpus, and its table row (with the model calls, tokens and time)."""
    facts = database(settings, FACTS_DB)
    try:
        tally, used, seconds = measured(redis, lambda: explain_all(path, rows, writer, facts=facts,
                                                                   settings=settings))
    finally:
        facts.close()
    return tally, tally.cells(used, seconds, model=model)


def main(argv: list[str] | None = None, *, settings: Settings | None = None) -> int:
    """Evaluate both paths; ``settings`` default to the environment's."""
    args = _arguments(argv)
    rows = read_jsonl(args.corpus)
    with eval_redis(settings) as (local, redis):
        model = configured_model(local, redis, wanted=not args.no_model)
        results = [evaluate("templated answer", rows, NoProse(), redis=redis, settings=local, model=False)]
        if model.llm is not None:
            results.append(evaluate("model prose", rows, model.llm, redis=redis, settings=local, model=True))
        line = model_line(model, redis)
    print(f"corpus: {args.corpus.name} ({len(rows)} rollbacks)")
    print(line)
    print()
    print_table(COLUMNS, [cells for _, cells in results])
    print("\ncited: the answer shown states it (metric name, value and threshold as the judge formats them, "
          "both versions, run id); model prose lacking a required fact is dropped for the template")
    if args.show:
        print("\n" + "\n".join(text for tally, _ in results for text in tally.shown))
    return 0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--no-model", action="store_true", help="templated answers only")
    parser.add_argument("--show", action="store_true", help="print every answer")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
