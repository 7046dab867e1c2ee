"""Redaction throughput on typical test output, next to the hand-written patterns it replaced, in the same run.

    .venv/bin/python bench/bench_redaction.py [--seconds S]

Prints MB/s for three texts (pytest output with no secret; the same with a failure that prints a few;
one log line) and how many of the corpus's secrets (tests/fixtures/secrets/corpus.yaml) each catches.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestra.redaction import redact  # noqa: E402
from tests.orchestra.test_redaction import CORPUS, leaks  # noqa: E402

# The hand-written patterns orchestra/redaction.py had before detect-secrets (kept here as the baseline).
OLD_REDACTED = "[REDACTED]"
OLD_TOKENS = [
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{8,}"), re.compile(r"\bxapp-[A-Za-z0-9-]{8,}"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), re.compile(r"\bsk-ant-[A-Za-z0-9_-]{10,}"),
    re.compile(r"\bsk-[A-Za-z0-9]{20,}"), re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"),
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:([^\s@/]+)@"),
]
OLD_ASSIGNMENT = re.compile(
    r"""(?ix)
    (\b[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)[\w.-]*
     ["']?\s*[:=]\s*["']?)
    (?!(?:None|null|true|false|os\.|self\.|request\.|settings\.|getenv|environ|\$|\{|\d+\b))
    ([^\s"',;)]{3,})""")


def old_redact(text: str) -> str:
    for pattern in OLD_TOKENS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(0).replace(m.group(1), OLD_REDACTED), text)
        else:
            text = pattern.sub(OLD_REDACTED, text)
    return OLD_ASSIGNMENT.sub(lambda m: m.group(1) + OLD_REDACTED, text)


def pytest_output(failures: int = 0) -> str:
    """About 150 KB of what a service's test run prints: progress lines, a few tracebacks."""
    lines = []
    for i in range(2000):
        lines.append(f"tests/test_orders.py::test_order_case_{i} PASSED{' ' * 20}[{i % 100:3d}%]")
        if i % 200 == 0:
            lines += [f'  File "/app/shop/orders.py", line {i}, in create_order',
                      f'    raise ValueError("bad quantity {i}")', "E   AssertionError: assert 3 == 4"]
    for case in CORPUS[:failures]:
        lines.append(f"E   RuntimeError: payment call failed: {case.text}")
    return "\n".join(lines)


def throughput(fn: Callable[[str], str], text: str, seconds: float) -> float:
    fn(text)  # warm: compiled patterns, detect-secrets imported
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        fn(text)
        n += 1
    return len(text.encode()) * n / (time.perf_counter() - start) / 1e6


def caught(fn: Callable[[str], str]) -> int:
    return sum(not leaks(c.secret, fn(c.text)) for c in CORPUS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    texts = {"test output, no secret": pytest_output(), "test output, 10 secrets": pytest_output(10),
             "one log line": "run r-20261130-abc123: stage test passed: 12 passed, 0 failed in 3.2s"}
    print(f"{'text':28} {'size':>9} {'detect-secrets':>15} {'hand-written':>13}")
    for name, text in texts.items():
        new, old = throughput(redact, text, args.seconds), throughput(old_redact, text, args.seconds)
        print(f"{name:28} {len(text) / 1000:7.1f}KB {new:11.2f} MB/s {old:9.2f} MB/s")
    print(f"corpus secrets caught: detect-secrets {caught(redact)}/{len(CORPUS)}, "
          f"hand-written {caught(old_redact)}/{len(CORPUS)}")


if __name__ == "__main__":
    main()
