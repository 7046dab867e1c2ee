"""Benchmark test generation on the example services and the legacy fixture; prints a table.

    .venv/bin/python bench/bench_testgen.py [--service PATH ...] [--max-targets N] [--min-coverage P]

The same run as bench/eval_testgen.py (kept for this name): for each service the deterministic
generator's row and, with a model configured, the model's row, with tests kept / proposed, mutants
killed, coverage before -> after and its gain, model calls and tokens, and time.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.eval_testgen import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
