"""Evaluate test generation: tests kept, mutants killed, coverage gained, deterministic vs model; prints a table.

    .venv/bin/python bench/eval_testgen.py [--service PATH ...] [--max-targets N] [--min-coverage P] [--no-model]

For each service (the example shop's backend and frontend and tests/fixtures/legacy_repo by
default) agents.testing.testgen runs twice on the uncovered functions: once with the deterministic
generator, once with the configured model (which falls back to the deterministic generator for a
target none of whose model tests held; "by model" counts the kept tests the model wrote). A test
is kept only if it passes, adds covered lines and kills a mutant of its target. Reported: kept /
proposed, kept tests the model wrote, mutants killed / tried by the kept tests, coverage before and
after (existing tests, then existing + kept) and the gain, the model's calls and tokens, and time.
Each service's tests run in an isolated virtualenv built from its requirements (agents.testing.venvs,
cached). Without a model the model rows are skipped and the reason printed.
"""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from redis import Redis  # noqa: E402

from agents.testing.report import TestGenReport  # noqa: E402
from agents.testing.testgen import generate_tests  # noqa: E402
from agents.testing.venvs import ensure_venv  # noqa: E402
from bench.eval_common import (  # noqa: E402
    Model,
    Usage,
    configured_model,
    eval_redis,
    measured,
    model_line,
    print_table,
    share,
)
from orchestra.llm import LLM  # noqa: E402
from orchestra.settings import Settings  # noqa: E402

DEFAULT_SERVICES = [PROJECT_ROOT / "examples" / "shop" / "backend", PROJECT_ROOT / "examples" / "shop" / "frontend",
                    PROJECT_ROOT / "tests" / "fixtures" / "legacy_repo"]
COLUMNS = ("service", "path", "kept/proposed", "by model", "mutants killed", "coverage", "gain", "model calls",
           "tokens", "venv s", "gen s")


@dataclass(frozen=True)
class Limits:
    """How much of each service to work on."""

    max_targets: int = 15
    min_coverage: float = 100.0


def generate(service: Path, python: Path, settings: Settings, llm: LLM | None, limits: Limits) -> TestGenReport:
    """One generation run on ``service`` (the model's when ``llm`` is given)."""
    return generate_tests(service, python=python, settings=settings, llm=llm,
                          run_id=f"eval-testgen-{uuid.uuid4().hex[:8]}", service=service_name(service),
                          max_targets=limits.max_targets, min_coverage=limits.min_coverage)


def row(report: TestGenReport, used: Usage, seconds: float, *, path: str, venv_s: float | None) -> tuple[str, ...]:
    """The table row of one generation run."""
    kept = report.kept
    tried = sum(c.mutants_tried for c in kept)
    by_model = sum(1 for c in kept if c.origin == "llm")
    calls = str(used.calls) + (f" ({used.failed} failed)" if used.failed else "")
    return (report.service, path, share(len(kept), len(report.candidates)) if report.candidates else "0/0",
            str(by_model) if path != "deterministic" else "-",
            share(sum(c.mutants_killed for c in kept), tried),
            f"{report.coverage_before:.1f}% -> {report.coverage_after:.1f}%",
            f"{report.coverage_after - report.coverage_before:+.1f}", calls, str(used.tokens),
            f"{venv_s:.1f}" if venv_s is not None else "", f"{seconds:.1f}")


def measure(service: Path, python: Path, settings: Settings, llm: LLM | None, redis: Redis,
            limits: Limits) -> tuple[TestGenReport, Usage, float]:
    """:func:`generate` with the model calls, tokens and seconds it took."""
    return measured(redis, lambda: generate(service, python, settings, llm, limits))


def evaluate(service: Path, settings: Settings, model: Model, redis: Redis, limits: Limits) -> list[tuple[str, ...]]:
    """The deterministic row and, with a model, the model row for one service."""
    started = time.monotonic()
    python = ensure_venv(service, settings)
    venv_s = time.monotonic() - started
    rows = [row(*measure(service, python, settings, None, redis, limits), path="deterministic", venv_s=venv_s)]
    if model.llm is not None:
        rows.append(row(*measure(service, python, settings, model.llm, redis, limits), path="model", venv_s=None))
    return rows


def main(argv: list[str] | None = None, *, settings: Settings | None = None) -> int:
    """Evaluate every service on both paths; ``settings`` default to the environment's."""
    args = _arguments(argv)
    limits = Limits(args.max_targets, args.min_coverage)
    with eval_redis(settings) as (local, redis):
        model = configured_model(local, redis, wanted=not args.no_model)
        rows = [r for service in args.service or DEFAULT_SERVICES
                for r in evaluate(service, local, model, redis, limits)]
        line = model_line(model, redis)
    print(line)
    print()
    print_table(COLUMNS, rows)
    print("\nkept: passes, adds covered lines and kills a mutant of its target; mutants killed: by the kept "
          "tests, of those tried against them; coverage: existing tests -> existing + kept tests")
    return 0


def service_name(service: Path) -> str:
    return "/".join(service.resolve().parts[-2:])


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", action="append", type=Path, help="service directory (repeatable)")
    parser.add_argument("--max-targets", type=int, default=Limits.max_targets)
    parser.add_argument("--min-coverage", type=float, default=Limits.min_coverage,
                        help="target functions covered less than this percent (default: any gap)")
    parser.add_argument("--no-model", action="store_true", help="deterministic generator only")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
