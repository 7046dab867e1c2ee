"""What the sandbox costs: a service's test run on the host next to the same run in a container.

    flock /tmp/orchestra-docker-tests.lock .venv/bin/python bench/bench_sandbox.py [--runs N] [--testgen]

Starts its own Docker engine (tests/support/docker_services.py, the tests' cache) and the test stage's
virtualenvs in a temporary cache. Prints, per path: installing the virtualenv once, then the median
and max of N runs of examples/shop/backend's tests under coverage (what the test stage does), and
with --testgen the whole test generation on the legacy fixture (every probe, candidate and mutant is
one run).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.testing.codemap import measure  # noqa: E402
from agents.testing.testgen import generate_tests  # noqa: E402
from agents.testing.venvs import ensure_venv  # noqa: E402
from orchestra.settings import PROJECT_ROOT, Settings  # noqa: E402
from tests.support.docker_services import BASE_IMAGE, dockerd, ensure_base_image  # noqa: E402

SERVICE = PROJECT_ROOT / "examples" / "shop" / "backend"
LEGACY = PROJECT_ROOT / "tests" / "fixtures" / "legacy_repo"


def timed(func: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = func()
    return result, time.perf_counter() - start


def bench(settings: Settings, runs: int, testgen: bool, tmp: Path) -> dict[str, float]:
    python, install = timed(lambda: ensure_venv(SERVICE, settings))
    times = []
    for i in range(runs):
        (rc, _, output), took = timed(lambda i=i: measure(python, SERVICE, [], settings=settings,
                                                           data_dir=tmp / f"cov-{settings.sandbox}-{i}"))
        if rc != 0:
            raise SystemExit(f"the tests failed ({settings.sandbox}):\n{output}")
        times.append(took)
    row = {"install_s": install, "median_s": statistics.median(times), "max_s": max(times)}
    if testgen:
        repo = Path(shutil.copytree(LEGACY, tmp / f"legacy-{settings.sandbox}"))
        legacy_python = ensure_venv(repo, settings)
        report, row["testgen_s"] = timed(lambda: generate_tests(repo, python=legacy_python, settings=settings))
        row["kept"] = len(report.kept)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--testgen", action="store_true", help="also time test generation on the legacy fixture")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp, dockerd() as url:
        ensure_base_image(url)
        host = Settings.from_env().with_(workdir=Path(tmp) / "work", cache_dir=Path(tmp) / "cache", sandbox="none")
        rows = {"host": bench(host, args.runs, args.testgen, Path(tmp)),
                "sandbox": bench(host.with_(sandbox="docker", docker_host=url, base_image=BASE_IMAGE), args.runs,
                                 args.testgen, Path(tmp))}
    print(f"\nexamples/shop/backend's tests under coverage, {args.runs} runs each (a run is two "
          "processes, each its own container in the sandbox: pytest under coverage, then the coverage report)\n")
    print(f"{'path':<8} {'install (once)':>15} {'run median':>11} {'run max':>9}" +
          (f" {'testgen':>9} {'kept':>5}" if args.testgen else ""))
    for name, row in rows.items():
        print(f"{name:<8} {row['install_s']:>14.1f}s {row['median_s']:>10.2f}s {row['max_s']:>8.2f}s" +
              (f" {row['testgen_s']:>8.1f}s {row['kept']:>5}" if args.testgen else ""))
    extra = rows["sandbox"]["median_s"] - rows["host"]["median_s"]
    print(f"\nthe sandbox adds {extra:.2f}s to each run ({extra / rows['host']['median_s']:.0%})")


if __name__ == "__main__":
    main()
