"""Benchmark test generation on the example services and the legacy fixture; prints a table.

    .venv/bin/python bench/bench_testgen.py [--service PATH ...] [--max-targets N]

For each service: coverage before and after (existing tests, then existing + kept generated
tests), generated tests kept / proposed, share of kept tests that kill at least one mutant, the
kept tests' mutation score (mutants killed / tried), wall time, and LLM tokens. Each service's
tests run in an isolated virtualenv built from its requirements (agents.testing.venvs). With
ANTHROPIC_API_KEY set the LLM writes candidates (Redis at REDIS_URL keeps budgets and events);
without it the deterministic generator does, and the table says so.
"""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from redis import Redis  # noqa: E402

from agents.testing.report import TestGenReport  # noqa: E402
from agents.testing.testgen import generate_tests  # noqa: E402
from agents.testing.venvs import ensure_venv  # noqa: E402
from orchestra.llm import LLM  # noqa: E402
from orchestra.settings import Settings  # noqa: E402

DEFAULT_SERVICES = [PROJECT_ROOT / "examples" / "shop" / "backend", PROJECT_ROOT / "examples" / "shop" / "frontend",
                    PROJECT_ROOT / "tests" / "fixtures" / "legacy_repo"]
COLUMNS = ("service", "cov before", "cov after", "kept/proposed", "kept killing", "mutation score",
           "venv s", "gen s", "tokens", "generator")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", action="append", type=Path, help="service directory (repeatable)")
    parser.add_argument("--max-targets", type=int, default=15)
    parser.add_argument("--min-coverage", type=float, default=100.0,
                        help="target functions covered less than this percent (default: any gap)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    llm = LLM(settings, redis=Redis.from_url(settings.redis_url)) if settings.llm_configured else None
    run_id = f"bench-testgen-{uuid.uuid4().hex[:8]}"
    rows = []
    for service in args.service or DEFAULT_SERVICES:
        started = time.monotonic()
        python = ensure_venv(service, settings)
        venv_s = time.monotonic() - started
        report = generate_tests(service, python=python, settings=settings, llm=llm, run_id=run_id,
                                service=_name(service), max_targets=args.max_targets,
                                min_coverage=args.min_coverage)
        rows.append(_row(report, venv_s))
    _print(rows)
    if llm is None:
        print("\nno model configured: candidates come from the deterministic generator; tokens are 0")
    return 0


def _row(report: TestGenReport, venv_s: float) -> tuple[str, ...]:
    kept = report.kept
    killing = sum(1 for c in kept if c.mutants_killed > 0)
    return (report.service, f"{report.coverage_before:.1f}%", f"{report.coverage_after:.1f}%",
            f"{len(kept)}/{len(report.candidates)} ({100 * report.kept_share:.0f}%)",
            f"{killing}/{len(kept)}" + (f" ({100 * killing / len(kept):.0f}%)" if kept else ""),
            f"{100 * report.mutation_score:.0f}%", f"{venv_s:.1f}", f"{report.seconds:.1f}",
            str(report.tokens), report.source)


def _print(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _name(service: Path) -> str:
    return "/".join(service.resolve().parts[-2:])


if __name__ == "__main__":
    raise SystemExit(main())
