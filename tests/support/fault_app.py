"""Run tests/support/fault_service.py (the example services' metrics and fault knobs) as a process."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.services import free_port, port_open, wait_for

SERVICE = Path(__file__).with_name("fault_service.py")
KNOBS = {"error_rate": "FAULT_ERROR_RATE", "latency_ms": "FAULT_LATENCY_MS", "leak_kb": "FAULT_LEAK_KB",
         "base_latency_ms": "BASE_LATENCY_MS"}


@contextmanager
def fault_app(version: str, **faults: float) -> Iterator[int]:
    """Run the service on a free loopback port; yields the port. ``faults``: error_rate,
    latency_ms, leak_kb, base_latency_ms."""
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "APP_VERSION": version, "PORT": str(port), "HOST": "127.0.0.1",
           **{KNOBS[k]: str(v) for k, v in faults.items()}}
    proc = subprocess.Popen([sys.executable, str(SERVICE)], env=env)  # noqa: S603
    try:
        wait_for(lambda: port_open(port), timeout=10, what=f"fault service {version} on port {port}")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
