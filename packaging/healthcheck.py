"""The container's health: its process answers GET /metrics on the container's own loopback.

Each process serves /metrics: the bot on ORCHESTRA_METRICS_PORT (9464), a worker on the port above,
the webhook receiver on its --port (8080 in these manifests). The bot's and the worker's listen on
127.0.0.1 only, so the check runs inside the container (Docker's HEALTHCHECK, a Kubernetes exec
probe) rather than from outside.

    python healthcheck.py                 # any of the three ports answers (one process per container)
    python healthcheck.py --port 9465     # that port answers
    python healthcheck.py --ready ...     # ... and Redis answered the scrape (orchestra_redis_up 1)

Exit 0 when healthy, 1 otherwise, with the reason on stderr.
"""
from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

WEBHOOKS_PORT = 8080
REDIS_UP = "orchestra_redis_up 1.0"


def default_ports() -> list[int]:
    metrics = int(os.environ.get("ORCHESTRA_METRICS_PORT") or 9464)
    return [metrics, metrics + 1, WEBHOOKS_PORT]


def problem(port: int, *, ready: bool, timeout: float) -> str | None:
    """Why the process on ``port`` is not healthy, or None when it is."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
            body = response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return f"127.0.0.1:{port}/metrics: {exc}"
    if ready and REDIS_UP not in body.splitlines():
        return f"127.0.0.1:{port}/metrics: Redis did not answer the scrape"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, action="append", help="the port to check (default: all three)")
    parser.add_argument("--ready", action="store_true", help="also require that Redis answered")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    problems = []
    for port in args.port or default_ports():
        reason = problem(port, ready=args.ready, timeout=args.timeout)
        if reason is None:
            return 0
        problems.append(reason)
    print("unhealthy: " + "; ".join(problems), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
