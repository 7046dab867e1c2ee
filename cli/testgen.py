"""`orchestra testgen PATH`: generate tests for a service's uncovered code, keep only proven ones."""
from __future__ import annotations

import argparse
from pathlib import Path

from agents.testing.testgen import generate_tests
from agents.testing.venvs import ensure_venv
from cli.common import connect
from orchestra.errors import OrchestraError
from orchestra.llm import LLM
from orchestra.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "testgen", help="generate proven tests for uncovered code",
        description="Generate pytest tests for the functions of a Python service that its tests leave "
                    "uncovered. Each test is kept only if it passes on the current code, adds coverage and "
                    "fails against a mutant of its function. Kept tests are written to --out, never into "
                    "the repository. Uses the LLM when ANTHROPIC_API_KEY is set, else a deterministic "
                    "generator.")
    parser.add_argument("path", type=Path, help="the service directory (where its tests run)")
    parser.add_argument("--out", type=Path, help="where to write the kept tests "
                                                 "(default: <workdir>/generated-tests/<service>)")
    parser.add_argument("--max-targets", type=int, default=15, help="at most this many functions")
    parser.add_argument("--min-coverage", type=float, default=50.0,
                        help="target functions covered less than this percent (default 50)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    root = args.path.resolve()
    if not root.is_dir():
        raise OrchestraError(f"{args.path} is not a directory", hint="pass the service's directory")
    llm = LLM(settings, redis=connect(settings)) if settings.llm_configured else None
    out = args.out or settings.workdir / "generated-tests" / root.name
    print(f"preparing an isolated virtualenv for {root.name} ...")
    report = generate_tests(root, python=ensure_venv(root, settings), settings=settings, llm=llm,
                            out_dir=out, max_targets=args.max_targets, min_coverage=args.min_coverage)
    print(report.summary())
    for candidate in report.candidates:
        mark = "kept   " if candidate.kept else "dropped"
        print(f"  {mark} {candidate.target} ({candidate.origin}): {candidate.reason}")
    if report.kept_files:
        print(f"kept tests written to {out}: " + ", ".join(sorted(report.kept_files)))
    return 0
