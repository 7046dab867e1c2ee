"""The load generator for tests and benchmarks is the product's (agents/observability/load.py); run it by hand:

    python -m tests.support.loadgen http://127.0.0.1:8080/ --seconds 30 --rate 50 --concurrency 4
"""
from __future__ import annotations

import argparse
import json

from agents.observability.load import (
    BackgroundLoad,
    LoadError,
    LoadResult,
    background_load,
    check_url,
    run_load,
)

__all__ = ["BackgroundLoad", "LoadError", "LoadResult", "background_load", "check_url", "main", "run_load"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--requests", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rate", type=float, help="total requests per second")
    args = parser.parse_args(argv)
    try:
        result = run_load(args.url, requests=args.requests, seconds=args.seconds,
                          concurrency=args.concurrency, rate=args.rate)
    except LoadError as exc:
        print(f"error: {exc}")
        return 2
    print(json.dumps(result.summary(), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
